"""The ``cmab`` command line: one Typer app, one function per command.

Commands import what they run inside their bodies, so ``cmab --help`` stays fast and the
package layering holds (simulators build on bandit, never the reverse at import time).
A bad argument gets one line on stderr and exit code 2, never a traceback: ``main`` runs the app
outside Typer's standalone mode and reports usage errors and BanditErrors itself.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bandit.errors import BanditError, InvalidInputError, UnavailableError

if TYPE_CHECKING:
    import logging
    import socket

    from pydantic import ValidationError

    from bandit.models import CampaignSpec
    from bandit.settings import Settings

app = typer.Typer(
    name="cmab",
    add_completion=False,
    pretty_exceptions_enable=False,
)

USAGE_ERROR = 2


class EnvName(StrEnum):
    artwork = "artwork"
    email = "email"
    email4 = "email4"
    linear = "linear"
    supervised = "supervised"


@app.callback()
def _cmab() -> None:
    """Contextual multi-armed bandit engine."""
    # A callback makes Typer keep command names (`cmab simulate`) even while there is one command.


@app.command()
def simulate(
    env: Annotated[EnvName, typer.Option(help="Environment to simulate.")] = EnvName.email,
    policies: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated policies among lin_ucb, lin_ts, beta_ts, epsilon_greedy, "
            "hybrid_lin_ucb, bart, vw (email4: the kind in every slot, or default: the "
            "campaign's own mix), each with optional settings: lin_ucb:alpha=0.3:l2=2.",
            show_default="all but vw",
        ),
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Simulated subscribers (decisions).")] = 20_000,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Decisions per batch; policies learn between batches.")
    ] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the environment, contexts and clicks.")] = 0,
    out: Annotated[Path, typer.Option(help="Directory for the report.")] = Path("reports/simulate"),
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    drift: Annotated[
        bool, typer.Option(help="Preferences drift linearly over the whole run.")
    ] = False,
    new_arm_at: Annotated[
        int | None, typer.Option(min=0, help="Step at which the environment's late arm arrives.")
    ] = None,
    delay: Annotated[
        int, typer.Option(min=0, help="Batches before a decision's reward reaches the policy.")
    ] = 0,
) -> None:
    """Compare policies on a simulated environment against uniform random and the oracle."""
    from simulators.environments import make_environment
    from simulators.reports.simulation import write_report
    from simulators.simulate import (
        CAMPAIGN_POLICY_NAMES,
        KNOWN_POLICY_NAMES,
        POLICY_NAMES,
        make_policies,
    )
    from simulators.simulate import simulate as run_simulation

    environment = make_environment(env.value, seed=seed, drift_steps=steps if drift else None,
                                   new_arm_at=new_arm_at)
    known = CAMPAIGN_POLICY_NAMES if env is EnvName.email4 else KNOWN_POLICY_NAMES
    names = (list(POLICY_NAMES) if policies is None
             else _policy_args("--policies", policies, known))
    contenders = make_policies(names, environment, seed=seed)
    try:
        # Before the simulation, so an unwritable --out costs nothing.
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InvalidInputError(f"--out: cannot create directory {out}: {error.strerror}") from None
    result = run_simulation(
        environment,
        contenders,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        delay=delay,
    )
    report = write_report(result, out)
    _print_simulation(result, report,
                      f"{env.value}: {steps} steps, batch size {batch_size}, seed {seed}")


def _print_simulation(result: Any, report: Path, title: str) -> None:
    """The summary table (per slot too, for several slots) and where the report is."""
    from rich.console import Console
    from rich.table import Table

    from simulators.reports.simulation import (
        SLOT_HEADER,
        SUMMARY_HEADER,
        format_row,
        format_slot_row,
    )

    table = Table(title=title)
    for i, column in enumerate(SUMMARY_HEADER):  # a policy's settings fold rather than get cut
        table.add_column(column, justify="left" if i == 0 else "right",
                         overflow="fold" if i == 0 else "ellipsis")
    for row in result.summary():
        table.add_row(*format_row(row))
    console = Console()
    console.print(table)
    if len(result.slots) > 1:
        per_slot = Table(title="per slot")
        for i, column in enumerate(SLOT_HEADER):
            per_slot.add_column(column, justify="left" if i < 2 else "right")
        for slot_row in result.slot_summary():
            per_slot.add_row(*format_slot_row(slot_row))
        console.print(per_slot)
    console.print(f"report: {report}", soft_wrap=True, markup=False, highlight=False)


ConfigOption = Annotated[Path | None, typer.Option(
    "--config", help="A TOML file of settings (bandit.settings): shared top-level keys and a "
    "section per command; CMAB_* variables override it, options both.", show_default="CMAB_CONFIG",
    dir_okay=False)]


def _settings(cls: Any, config: Path | None, **options: Any) -> Any:
    """``cls`` (a settings class of bandit.settings) from the config file, the environment and
    the options given (None: not given), in increasing priority; a bad one is one line."""
    from pydantic import ValidationError

    given = {key: value for key, value in options.items() if value is not None}
    try:
        return cls(**({"config": config} if config is not None else {}), **given)
    except ValidationError as error:
        raise InvalidInputError(_describe_settings_error(error)) from None


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on.", show_default="127.0.0.1")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="TCP port (0: any free one).",
                                 show_default="8000")
    ] = None,
    snapshot: Annotated[
        Path | None,
        typer.Option(help="Engine snapshot: loaded at start if the file exists, written at "
                     "shutdown."),
    ] = None,
    env_file: Annotated[
        Path | None, typer.Option(help="A dotenv file of CMAB_* settings.", exists=True,
                                  dir_okay=False)
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the HTTP decision service until Ctrl-C.

    Each setting is taken from its option, else its CMAB_* variable, else --env-file, else
    the [service] section (or top-level shared key) of --config.
    """
    import contextlib
    import logging

    import uvicorn

    from bandit.service import create_app, tune_gc
    from bandit.service.deadlines import deadline_protocol
    from bandit.settings import Settings
    from bandit.tracing import configure_export

    settings = _settings(Settings, config, _env_file=env_file, host=host, port=port,
                         snapshot_path=snapshot)
    configure_export(settings.otlp_endpoint, "cmab-serve")
    sock = _listening_socket(settings.host, settings.port)
    link = None
    if settings.bootstrap_servers:
        from streams.link import stream_link

        link = stream_link(settings.bootstrap_servers, settings.topic_prefix,
                           settings.decision_log_capacity)
    try:
        # After the bind: a busy port loads no snapshot.
        app_ = create_app(settings=settings, link=link)
    except BanditError:  # a corrupt or foreign snapshot: one line, and the port let go
        sock.close()
        raise
    tune_gc()
    logger = logging.getLogger("uvicorn.error")
    if settings.id_seed is not None:
        logger.warning(
            "cmab serve: CMAB_ID_SEED is set: decision ids are seeded, for reproducible runs "
            "only (a restart or another replica with the same id seed issues the same ids)")
    server = uvicorn.Config(app_, host=settings.host, port=settings.port, log_level="info",
                            http=deadline_protocol(settings.header_timeout_s,
                                                   settings.body_timeout_s))
    # uvicorn does not announce sockets it was handed; the real port matters with --port 0.
    logger.info("cmab serve: listening on http://%s:%d (Ctrl-C to stop)", settings.host,
                sock.getsockname()[1])
    _warn_open(logger, settings)
    # On SIGINT/SIGTERM uvicorn stops accepting, drains, runs the shutdown (which writes the
    # snapshot), then re-raises the signal: Ctrl-C arrives here as KeyboardInterrupt.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(server).run(sockets=[sock])


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound here rather than by uvicorn, so a busy port is one line and exit code 2."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise InvalidInputError(f"--host/--port: cannot listen on {host}:{port}: "
                                f"{error.strerror}") from None
    return sock


def _warn_open(logger: logging.Logger, settings: Settings) -> None:
    """Warn about each token left unset: its routes are open to anyone who reaches the port."""
    if settings.api_token is None:
        logger.warning("cmab serve: NO MANAGEMENT TOKEN (CMAB_API_TOKEN): anyone who reaches "
                       "the port may create, change and pause campaigns and erase subjects")
    if settings.ingest_token is None:
        logger.warning("cmab serve: NO INGEST TOKEN (CMAB_INGEST_TOKEN): anyone who reaches "
                       "the port may post impressions and clicks, which the model learns")


@app.command()
def broker(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.",
                                             show_default="127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="TCP port (0: any free "
                                             "one).", show_default="0")] = None,
    durable: Annotated[Path | None, typer.Option(
        help="Keep topics, records and committed offsets in this directory (an S3 store on "
             "loopback), so a restart on it finds them again.")] = None,
    config: ConfigOption = None,
) -> None:
    """Run the local Kafka-compatible broker (tansu, in memory unless --durable) until Ctrl-C
    or SIGTERM. Settings: options, else CMAB_BROKER_* variables, else [broker] of --config.

    The first line printed is its bootstrap address, for --bootstrap-servers or
    CMAB_BOOTSTRAP_SERVERS.
    """
    import signal

    from bandit.settings import BrokerSettings
    from streams.broker import LocalBroker

    settings = _settings(BrokerSettings, config, host=host, port=port, durable=durable)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM stops it the way Ctrl-C does: out of the with block, which stops the broker.
    signal.signal(signal.SIGTERM, interrupt)
    # The address inside the suppress: a SIGTERM right after it is a clean stop too.
    with (LocalBroker(host=settings.host, port=settings.port or None,
                      durable=settings.durable) as running,
          contextlib.suppress(KeyboardInterrupt)):
        print(running.bootstrap_servers, flush=True)
        signal.pause()


def _run_until_signalled(run: Callable[[Callable[[], bool]], None], records: Callable[[], int],
                         status: Callable[[float], str], quiet: bool) -> None:
    """``run(should_stop)`` until SIGTERM or SIGINT (the loop then ends its own way: final
    checkpoint, leaving the group); unless ``quiet``, ``status(records/s)`` every 5 s."""
    import signal
    import time

    stop = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    last, seen = time.monotonic(), records()

    def should_stop() -> bool:
        nonlocal last, seen
        now = time.monotonic()
        if not quiet and now - last >= 5.0:
            n = records()
            print(status((n - seen) / (now - last)), file=sys.stderr, flush=True)
            last, seen = now, n
        return stop

    run(should_stop)


@app.command()
def worker(
    bootstrap_servers: Annotated[str | None, typer.Option(
        help="Kafka bootstrap address.", show_default="127.0.0.1:9092")] = None,
    topic_prefix: Annotated[str | None, typer.Option(
        help="Topics are <prefix>.decisions, <prefix>.events, ...", show_default="cmab")
    ] = None,
    group: Annotated[str | None, typer.Option(
        help="Consumer group of the workers.", show_default="cmab-worker")] = None,
    partitions: Annotated[int | None, typer.Option(
        min=1, help="Partitions of topics this command creates if missing.", show_default="4")
    ] = None,
    max_poll_records: Annotated[int | None, typer.Option(
        min=1, help="Records per batch.", show_default="5000")] = None,
    session_timeout_ms: Annotated[int | None, typer.Option(
        min=1000, help="Consumer group session timeout.", show_default="6000")] = None,
    heartbeat_interval_ms: Annotated[int | None, typer.Option(
        min=100, help="Consumer group heartbeat interval.", show_default="1000")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress lines on stderr.")] = False,
    checkpoint_interval_ms: Annotated[int | None, typer.Option(
        min=0, show_default="1000", help="Checkpoint a partition at most this often (also when "
        "a batch closed windows, on catching up and on stop); 0: after every batch.")] = None,
    fetch_max_wait_ms: Annotated[int | None, typer.Option(
        min=1, max=10000, show_default="100", help="Longest time the broker may hold a fetch "
        "that found nothing new: new records wait up to about half of it (lag), while an idle "
        "worker fetches this often (CPU); a durable broker needs it longer than a storage read.")
    ] = None,
    max_pending: Annotated[int | None, typer.Option(
        min=1, show_default="1000000", help="Most decisions of one "
        "campaign waiting for their attribution windows per partition; decisions beyond go "
        "to the dead-letter topic.")] = None,
    erasure_ledger: Annotated[int | None, typer.Option(
        min=0, show_default="1000000", help="Most learned "
        "decisions each partition keeps (sealed chunks on <prefix>.ledger, the rest in its "
        "checkpoint) so that an erasure (cmab erase, "
        "DELETE /v1/subjects/{id}) takes a subscriber's out of the model; beyond it the oldest "
        "are dropped; 0 keeps none (an erasure then drops pending decisions only).")] = None,
    config: ConfigOption = None,
) -> None:
    """Join decisions and events, learn, checkpoint to the state topic; until Ctrl-C or
    SIGTERM (then it leaves its group, and its partitions move to the other workers).
    Settings: options, else CMAB_WORKER_* variables (CMAB_* for the shared keys), else
    [worker] (or the top-level keys) of --config."""
    from bandit.settings import WorkerSettings
    from bandit.tracing import configure_export
    from streams.kafka import KafkaTransport
    from streams.topics import Topics, create_topics
    from streams.worker import Worker

    s = _settings(WorkerSettings, config, bootstrap_servers=bootstrap_servers,
                  topic_prefix=topic_prefix, group=group, partitions=partitions,
                  max_poll_records=max_poll_records, session_timeout_ms=session_timeout_ms,
                  heartbeat_interval_ms=heartbeat_interval_ms,
                  checkpoint_interval_ms=checkpoint_interval_ms,
                  fetch_max_wait_ms=fetch_max_wait_ms, max_pending=max_pending,
                  erasure_ledger=erasure_ledger)
    configure_export(s.otlp_endpoint, "cmab-worker")
    topics = Topics(s.topic_prefix)
    create_topics(s.bootstrap_servers, topics, s.partitions)
    transport = KafkaTransport(s.bootstrap_servers, topics, s.group,
                               max_poll_records=s.max_poll_records,
                               session_timeout_ms=s.session_timeout_ms,
                               heartbeat_interval_ms=s.heartbeat_interval_ms,
                               fetch_max_wait_ms=s.fetch_max_wait_ms)
    running = Worker(transport, checkpoint_interval_ms=s.checkpoint_interval_ms,
                     max_pending=s.max_pending, erasure_ledger=s.erasure_ledger)
    transport.attach(running)
    if not quiet:
        print(f"cmab worker: group {s.group} on {topics.decisions} and {topics.events} at "
              f"{s.bootstrap_servers}", file=sys.stderr, flush=True)

    def status(rate: float) -> str:
        c = running.counters
        return (f"cmab worker: partitions {sorted(running.partitions)}, {rate:,.0f} records/s, "
                f"joined {c.joined:,}, dead letters {c.dead_letters:,}, late {c.late:,}, "
                f"over capacity {c.over_capacity:,}, stripped {c.stripped:,}, "
                f"erased {c.erased:,}")

    _run_until_signalled(running.run, lambda: running.counters.records, status, quiet)


@app.command()
def erase(
    user_ids: Annotated[list[str], typer.Argument(
        help="Subscriber ids to erase (each 1 to 128 characters).", show_default=False)],
    bootstrap_servers: Annotated[
        str, typer.Option(envvar="CMAB_BOOTSTRAP_SERVERS", help="Kafka bootstrap address.")
    ] = "127.0.0.1:9092",
    topic_prefix: Annotated[str, typer.Option(help="Prefix of the topics.")] = "cmab",
    at_ms: Annotated[int | None, typer.Option(
        min=0, show_default="now", help="Erase the decisions made at or before this event time "
        "(ms since the epoch).")] = None,
    wait: Annotated[bool, typer.Option(
        help="Wait until every partition's checkpoint on <prefix>.state shows the erasures "
             "applied (their learned decisions out of the model), with a progress line.")
    ] = False,
    timeout_s: Annotated[float, typer.Option(
        min=0.0, help="With --wait: give up after this many seconds (exit code 1).")] = 600.0,
) -> None:
    """Erase subscribers in the stream, as DELETE /v1/subjects/{id} does in stream mode:
    publish an erase record per pseudonym each subscriber had (read from <prefix>.subjects;
    and one for the legacy unkeyed key; no id) to <prefix>.campaigns, which every worker
    applies to every partition, now and on every restore: their pending decisions are dropped
    and their learned ones taken out of the policies' sums (as far as each partition's
    erasure ledger holds them); then destroy their secrets (tombstones on <prefix>.subjects),
    so the pseudonyms in the logs no longer follow from the ids. Prints a line per
    subscriber. The decision services' merged models follow the workers' states."""
    import time

    from bandit.engine.pseudonyms import SubjectKeys
    from bandit.models.names import MAX_MS
    from streams.link import ErasureWatch, publish_erasures
    from streams.subjects import SharedSubjects
    from streams.topics import Topics
    from streams.worker import erase_record

    for i, user_id in enumerate(user_ids, 1):
        if not 1 <= len(user_id) <= 128:
            raise InvalidInputError(f"USER_IDS: subscriber id {i} has {len(user_id)} "
                                    "characters, expected 1 to 128")
    if at_ms is not None and at_ms > MAX_MS:
        raise InvalidInputError(f"--at-ms: {at_ms} is past the latest time, {MAX_MS}")
    at = int(time.time() * 1000) if at_ms is None else at_ms
    topics = Topics(topic_prefix)
    try:
        shared = SharedSubjects(SubjectKeys(), bootstrap_servers, topics)
    except UnavailableError as exc:  # no subjects topic: a deployment that never ran
        raise InvalidInputError(str(exc)) from None
    try:
        keys = [shared.subjects.erase_keys(user_id) for user_id in user_ids]
        offsets = publish_erasures(bootstrap_servers, topics,
                                   [erase_record(k, at) for mine in keys for k in mine])
        for user_id in user_ids:
            shared.erase(user_id)
    finally:
        shared.close()
    first = 0
    for user_id, mine in zip(user_ids, keys, strict=True):
        span = offsets[first:first + len(mine)]
        first += len(mine)
        print(f"{user_id}: {len(mine)} erase record(s) at {topics.campaigns} offsets "
              f"{span[0]}-{span[-1]} (at_ms {at})", flush=True)
    if not wait:
        return
    watch = ErasureWatch(bootstrap_servers, topics, max(offsets))
    try:
        deadline = time.monotonic() + timeout_s
        shown = -1
        while (done := len(watch.check())) < len(watch.partitions):
            if done != shown:
                print(f"cmab erase: {done} of {len(watch.partitions)} partitions applied the "
                      "erasures", file=sys.stderr, flush=True)
                shown = done
            if time.monotonic() >= deadline:
                print(f"cmab: error: --wait: {done} of {len(watch.partitions)} partitions "
                      f"applied the erasures in {timeout_s:g} s (are the workers running?)",
                      file=sys.stderr)
                raise typer.Exit(1)
            time.sleep(0.5)
        print(f"cmab erase: {done} of {done} partitions applied the erasures", file=sys.stderr,
              flush=True)
    finally:
        watch.close()


@app.command("vw-learner")
def vw_learner(
    bootstrap_servers: Annotated[str | None, typer.Option(
        help="Kafka bootstrap address.", show_default="127.0.0.1:9092")] = None,
    topic_prefix: Annotated[str | None, typer.Option(
        help="Topics are <prefix>.joined, ...", show_default="cmab")] = None,
    group: Annotated[str | None, typer.Option(
        help="Group its .joined offsets are committed to (lag monitoring only; restarts use "
        "its checkpoint).", show_default="cmab-vw-learner")] = None,
    partitions: Annotated[int | None, typer.Option(
        min=1, help="Partitions of topics this command creates if missing.", show_default="4")
    ] = None,
    max_poll_records: Annotated[int | None, typer.Option(
        min=1, help=".joined records (blocks of up to 1,000 examples) per batch.",
        show_default="20")] = None,
    checkpoint_interval_ms: Annotated[int | None, typer.Option(
        min=0, help="Least time between checkpoints (0: after every batch).",
        show_default="1000")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress lines on stderr.")] = False,
    config: ConfigOption = None,
) -> None:
    """Learn every VW slot from the .joined training log, in order, and checkpoint the models
    with their offsets to .vwstate; until Ctrl-C or SIGTERM (then a last checkpoint). Run one
    per deployment: VW learns in order, so a VW slot has a single learner. Settings: options,
    else CMAB_VW_LEARNER_* variables (CMAB_* for the shared keys), else [vw_learner] (or the
    top-level keys) of --config."""
    from bandit.settings import VWLearnerSettings
    from streams.topics import Topics, create_topics
    from streams.vw_learner import KafkaVWLearner

    s = _settings(VWLearnerSettings, config, bootstrap_servers=bootstrap_servers,
                  topic_prefix=topic_prefix, group=group, partitions=partitions,
                  max_poll_records=max_poll_records,
                  checkpoint_interval_ms=checkpoint_interval_ms)
    topics = Topics(s.topic_prefix)
    create_topics(s.bootstrap_servers, topics, s.partitions)
    running = KafkaVWLearner(s.bootstrap_servers, topics, group_id=s.group,
                             max_poll_records=s.max_poll_records,
                             checkpoint_interval_ms=s.checkpoint_interval_ms)
    if not quiet:
        print(f"cmab vw-learner: {topics.joined} to {topics.vwstate} at {s.bootstrap_servers}",
              file=sys.stderr, flush=True)

    def status(rate: float) -> str:
        c = running.learner.counters
        return (f"cmab vw-learner: {rate:,.0f} records/s, learned {c.learned:,}, "
                f"skipped {c.skipped:,}, dead letters {c.dead_letters:,}, "
                f"duplicates dropped {c.duplicates:,}, past the dedup horizon "
                f"{c.past_horizon:,}")

    _run_until_signalled(running.run, lambda: running.learner.counters.records, status, quiet)


@app.command("vw-export")
def vw_export(
    source: Annotated[Path, typer.Argument(help="An engine snapshot, or a VW model file.")],
    out: Annotated[Path, typer.Option(help="Where to write the readable model.")],
    campaign: Annotated[
        str | None, typer.Option(help="Campaign of the VW slot (for a snapshot).")] = None,
    slot: Annotated[str | None, typer.Option(help="The VW slot (for a snapshot).")] = None,
    hashes: Annotated[
        bool, typer.Option(help="Weights by hash index (--readable_model) instead of by "
                           "feature name (--invert_hash).")] = False,
) -> None:
    """Write a VW slot's model as text, for inspection.

    From a snapshot, features are named: x<j> is the slot's input column j, id<a> arm a,
    f<j> arm feature j (the legend is printed). A bare VW model file has no names: its
    weights are written by hash index.
    """
    if not source.is_file():
        raise InvalidInputError(f"{source}: no such file")
    if (campaign is None) != (slot is None):
        raise InvalidInputError("--campaign and --slot go together (both for a snapshot)")
    if campaign is None:
        from vowpalwabbit import pyvw

        try:
            ws = pyvw.Workspace(arg_list=["--quiet", "-i", str(source), "--readable_model",
                                          str(out)])
        except RuntimeError as exc:
            raise InvalidInputError(f"{source}: not a VW model ({exc})") from None
        ws.finish()
        return
    from bandit.engine import Engine
    from bandit.policies import VWPolicy

    policy, columns, arm_ids = Engine.load(source).slot_policy(campaign, slot)  # type: ignore[arg-type]
    if not isinstance(policy, VWPolicy):
        raise InvalidInputError(f"campaign {campaign!r}, slot {slot!r}: policy {policy.kind!r} "
                                "is not a VW policy")
    policy.export(out, names=not hashes)
    for j, name in enumerate(columns):
        print(f"x{j}\t{name}")
    for a, arm in enumerate(arm_ids):
        print(f"id{a}\t{arm}")


class LogFormat(StrEnum):
    joined = "joined"
    dsjson = "dsjson"


class TargetMode(StrEnum):  # simulators.offline.targets.MODES
    progressive = "progressive"
    cross_fit = "cross-fit"
    fixed = "fixed"


@app.command()
def replay(
    dataset: Annotated[
        str | None, typer.Option(help="A bundled dataset: obd (Open Bandit Dataset sample); or "
                                 "joined / dsjson: --log FILE is such a log.")
    ] = None,
    campaign: Annotated[str, typer.Option(help="OBD campaign: all, men or women.")] = "all",
    behavior: Annotated[
        str, typer.Option(help="OBD log to evaluate on: random (uniform) or bts.")
    ] = "random",
    log: Annotated[Path | None, typer.Option(help="A log file instead of --dataset.")] = None,
    format: Annotated[LogFormat, typer.Option(help="Format of --log.")] = LogFormat.joined,
    spec: Annotated[
        Path | None, typer.Option(help="Campaign spec (JSON) of a joined log.")
    ] = None,
    slot: Annotated[str | None, typer.Option(help="Slot of a joined log to evaluate.")] = None,
    policy: Annotated[
        str, typer.Option(help="Comma-separated targets: lin_ucb, lin_ts, beta_ts, "
                          "epsilon_greedy, hybrid_lin_ucb, bart, vw, uniform, and with obd "
                          "random_logged, bts_logged; a policy with optional settings: "
                          "lin_ucb:alpha=0.3:l2=2.")
    ] = "lin_ucb,uniform",
    estimators: Annotated[
        str, typer.Option(help="Comma-separated among replay, ips, snips, dm, dr, sndr, "
                          "switch-dr, dr-os.")
    ] = "replay,ips,snips,dm,dr",
    n_boot: Annotated[int, typer.Option(min=1, help="Bootstrap resamples.")] = 1000,
    clip: Annotated[
        float | None, typer.Option(min=0.0, help="Clip importance weights at this value.")
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Events per choose/learn batch (replay) and per "
                          "score/learn batch (--target-mode progressive).")
    ] = 100,
    target_mode: Annotated[
        TargetMode, typer.Option(help="How ips, snips, dm and dr read a project policy: "
                                 "progressive (learns the log in order, scores each batch "
                                 "before learning it), cross-fit (learns k-1 folds, scores "
                                 "the held-out one) or fixed (as it stands).")
    ] = TargetMode.progressive,
    folds: Annotated[int, typer.Option(min=2, help="Folds of --target-mode cross-fit.")] = 5,
    target_snapshot: Annotated[
        Path | None, typer.Option(help="An engine snapshot whose --slot policy is evaluated "
                                  "too, fixed, as target 'snapshot' (campaign: --spec's).")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of policies and bootstrap.")] = 0,
    out: Annotated[Path, typer.Option(help="Directory for the report.")] = Path("reports/replay"),
    cache_dir: Annotated[
        Path | None, typer.Option(help="Where the OBD wheel is cached.",
                                  show_default="~/.cache/cmab/obd")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Estimate how target policies would have done on a logged log, with intervals."""
    from simulators.replay import TARGET_NAMES, compare, make_targets
    from simulators.reports.replay import write_report

    if dataset in (LogFormat.joined.value, LogFormat.dsjson.value):  # --dataset joined --log F
        if log is None:
            raise InvalidInputError(f"--dataset {dataset}: needs --log FILE")
        format, dataset = LogFormat(dataset), None
    if (dataset is None) == (log is None):
        raise InvalidInputError("give exactly one of --dataset obd and --log FILE")
    behaviors = None
    if dataset is not None:
        from simulators.offline.obd import BEHAVIORS, load_obd

        if dataset != "obd":
            raise InvalidInputError(f"--dataset: expected obd, joined or dsjson, got {dataset!r}")
        if behavior not in BEHAVIORS:
            raise InvalidInputError(f"--behavior: expected random or bts, got {behavior!r}")
        behaviors = load_obd(campaign, cache_dir=cache_dir)
        logged = behaviors[behavior]
    else:
        assert log is not None
        logged = _logged(log, format, spec, slot)
    names = _policy_args("--policy", policy, TARGET_NAMES)
    chosen = [e.strip() for e in estimators.split(",") if e.strip()]
    targets = make_targets(names, logged, behaviors=behaviors, seed=seed)
    if target_snapshot is not None:
        from simulators.offline.ope import target_probabilities
        from simulators.offline.targets import snapshot_policy

        if slot is None:
            raise InvalidInputError("--target-snapshot needs --slot NAME")
        if "snapshot" in targets:
            raise InvalidInputError("--policy: 'snapshot' is the --target-snapshot target")
        campaign_name = _campaign_spec(spec).name if spec is not None else None
        targets["snapshot"] = target_probabilities(
            snapshot_policy(target_snapshot, logged, slot, campaign_name), logged)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InvalidInputError(f"--out: cannot create directory {out}: {error.strerror}") from None
    result = compare(logged, targets, chosen, n_boot=n_boot, clip=clip, batch_size=batch_size,
                     seed=seed, progress=progress, target_mode=target_mode.value, folds=folds,
                     parameters={"n_boot": n_boot, "clip": clip, "seed": seed,
                                 "batch_size": batch_size, "target_mode": target_mode.value}
                     | ({"folds": folds} if target_mode is TargetMode.cross_fit else {}))
    report = write_report(result, out)
    _print_replay(result, report,
                  f"{logged.name}: {logged.n:,} events, {logged.n_actions} actions")


def _policy_args(option: str, text: str, known: Sequence[str]) -> list[Any]:
    """The policies of a --policy list with their settings (``simulators.policy_args``)."""
    from simulators.policy_args import parse_policy_args

    try:
        return parse_policy_args(text, known)
    except InvalidInputError as error:
        raise InvalidInputError(f"{option}: {error}") from None


def _logged(log: Path, format: LogFormat, spec: Path | None, slot: str | None) -> Any:
    """The logged events of a --log file."""
    if format is LogFormat.dsjson:
        from simulators.offline.logs import read_dsjson

        return read_dsjson(log, name=log.name)
    from simulators.offline.logs import read_joined

    if spec is None or slot is None:
        raise InvalidInputError("--format joined needs --spec FILE and --slot NAME")
    return read_joined(log, _campaign_spec(spec), slot)


def _print_replay(result: Any, report: Path, title: str) -> None:
    """The estimates table and where the report is."""
    from rich.console import Console
    from rich.table import Table

    from simulators.replay import HEADER

    table = Table(title=title)
    for i, column in enumerate(HEADER):  # a policy's settings fold rather than get cut
        table.add_column(column, justify="left" if i < 2 else "right",
                         overflow="fold" if i == 0 else "ellipsis")
    for row in result.rows():
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(f"report: {report}", soft_wrap=True, markup=False, highlight=False)


def _campaign_spec(spec: Path) -> CampaignSpec:
    """The CampaignSpec in the JSON file given as ``--spec`` (one-line errors naming the field)."""
    from pydantic import ValidationError

    from bandit.models import CampaignSpec

    try:
        return CampaignSpec.model_validate_json(spec.read_bytes())
    except OSError as error:
        raise InvalidInputError(f"--spec: cannot read {spec}: {error.strerror}") from None
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise InvalidInputError(f"--spec {spec}: {where}: {first['msg']}") from None


@app.command("export-dsjson")
def export_dsjson(
    joined: Annotated[Path, typer.Option(help="The joined log (JSON lines of joined events).")],
    spec: Annotated[Path, typer.Option(help="The campaign's spec (JSON).")],
    slot: Annotated[str, typer.Option(help="The slot to export.")],
    out: Annotated[Path, typer.Option(help="Where to write the DSJSON lines.")],
) -> None:
    """Write one slot of a joined log as Vowpal Wabbit DSJSON, to train VW offline:
    ``vw --cb_explore_adf --dsjson -d OUT``. Per decision: its id as EventId, its time, the
    context as the engine encodes it, the slot's arms with their features (from the spec) as
    _multi, cost = -reward, the logged arm's propensity and the logging policy's probability of
    every arm (``p``). Holdout and consent-less events are left out. Decisions joined without
    the probability of every arm (legacy impressions) get no ``p``; a warning counts them."""
    import dataclasses

    import numpy as np

    from simulators.offline.logs import read_joined, spec_arm_features, write_dsjson

    campaign = _campaign_spec(spec)
    logged = read_joined(joined, campaign, slot)
    # The spec's arm features only: not the constant column read_joined gives policies
    # (BaRT, hybrid) for a slot without any.
    features, names = spec_arm_features(campaign, slot)
    logged = dataclasses.replace(logged, action_features=features, action_feature_names=names)
    try:
        n = write_dsjson(logged, out)
    except OSError as error:
        raise InvalidInputError(f"--out: cannot write {out}: {error.strerror}") from None
    assert logged.probabilities is not None  # read_joined always gives them
    unknown = int(np.isnan(logged.probabilities).all(axis=1).sum())
    if unknown:
        print(f"cmab export-dsjson: warning: {unknown:,} of {n:,} decisions were joined without "
              "the probability of every arm (legacy impressions): their lines have no 'p', "
              "only the logged arm's propensity (_label_probability, what VW learns from)",
              file=sys.stderr)
    skipped = ", ".join(f"{k} {v:,}" for k, v in logged.skipped.items())
    print(f"{out}: {n:,} events" + (f" (left out: {skipped})" if skipped else ""))


@app.command("export-joined")
def export_joined(
    bootstrap_servers: Annotated[str, typer.Option(help="Kafka bootstrap servers.")],
    out: Annotated[Path, typer.Option(help="Where to write the joined log (JSON lines).")],
    topic_prefix: Annotated[str, typer.Option(help="Prefix of the topics.")] = "cmab",
    idle_ms: Annotated[int, typer.Option(min=100, help="Stop after a read this long brings "
                                                       "nothing new.")] = 1000,
) -> None:
    """Copy ``<prefix>.joined`` (the training log the workers write, in blocks) into a file,
    one joined event per line, each decision once (a worker restarted from a checkpoint may
    write a decision again), for ``cmab replay --dataset joined`` and ``cmab export-dsjson``.
    Records that are not blocks and examples without a decision id are counted, left out."""
    from streams.joinedfile import write_joined_file
    from streams.topics import Topics

    try:
        copied = write_joined_file(bootstrap_servers, Topics(topic_prefix).joined, out,
                                   idle_ms=idle_ms)
    except OSError as error:
        raise InvalidInputError(f"--out: cannot write {out}: {error.strerror}") from None
    left = copied.left_out()
    print(f"{out}: {copied.events:,} joined events" + (f" (left out: {left})" if left else ""))


@app.command()
def demo(
    subscribers: Annotated[
        int, typer.Option(min=10, help="Subscribers on the list (each gets every send).")
    ] = 20_000,
    sends: Annotated[int, typer.Option(min=1, help="Weekly sends to play.")] = 6,
    full: Annotated[
        bool, typer.Option(help="The full 280,000-subscriber list (overrides --subscribers).")
    ] = False,
    seed: Annotated[int, typer.Option(
        help="Seed of the subscribers, their clicks and the service's decision ids.")] = 0,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of the topics.")] = 2,
    out: Annotated[Path, typer.Option(help="Directory for the report.")] = Path("reports/demo"),
) -> None:
    """The whole loop on one machine: broker, decision service and worker on 127.0.0.1, a
    seeded newsletter played through the real HTTP API and Kafka topics, then a report."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from simulators.demo import run_demo
    from simulators.reports.demo import LIVE_HEADER, live_rows

    n = 280_000 if full else subscribers
    console = Console()
    if not console.is_terminal:  # a pipe or CI log: Rich's 80 columns would cut the table
        console = Console(width=max(console.width, 160))
    console.print(f"cmab demo: {n:,} subscribers, {sends} weekly sends; starting the broker, "
                  "the decision service and a worker on 127.0.0.1 ...")
    results: list[Any] = []

    def table() -> Table:
        t = Table(title="weekly sends (CTR from the simulated clicks; lift in CTR points)")
        for i, column in enumerate(LIVE_HEADER):
            t.add_column(column, justify="left" if i == 0 else "right")
        for row in live_rows(results):
            t.add_row(*row)
        return t

    with Live(table(), console=console, auto_refresh=False, transient=False) as live:
        def on_send(result: Any) -> None:
            results.append(result)
            live.update(table(), refresh=True)

        _, report = run_demo(subscribers=n, sends=sends, seed=seed, out=out,
                             partitions=partitions, on_send=on_send)
    console.print()
    console.print(f"report: {report}", soft_wrap=True, markup=False, highlight=False)


@app.command()
def decide(
    campaign: Annotated[str, typer.Option(help="The campaign to decide for.")],
    input: Annotated[Path, typer.Option(
        "--input", help="The send list: .csv (a header line) or .parquet.")],
    out: Annotated[Path, typer.Option(help="Where to write the decisions: .csv or .parquet.")],
    snapshot: Annotated[Path | None, typer.Option(
        help="Decide in this process from an engine snapshot (as cmab serve --snapshot "
        "writes it); the decisions are not logged.")] = None,
    url: Annotated[str | None, typer.Option(
        help="Decide through the service at this URL (it logs the decisions); the token "
        "variables as for the client.")] = None,
    errors: Annotated[Path | None, typer.Option(
        help="Also write every bad row here (CSV: where, column, reason).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Decide for every subscriber of a file, in process (--snapshot) or by a service (--url).

    Input columns, by name: user_id (required); each context feature of the campaign's spec
    (numbers for numeric features; a column or an empty cell may be left out only where the
    feature has a default; labels for categorical ones); each segment of the spec (optional);
    consent (optional, default true: true/false, 1/0, yes/no). Another column is refused.

    Output, one row per decision in input order: decision_id, user_id, holdout, then per slot
    <slot>.arm and <slot>.propensity.

    A bad row is reported on stderr with its line number (CSV: the header is line 1; Parquet:
    row 1 is the first) and left out; the rest are decided, and the exit code is 1. Bad usage
    (no such file, an unknown extension, an unknown campaign or column) is one line and exit
    code 2.
    """
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from bandit.bulk import decide_file, file_format

    if (snapshot is None) == (url is None):
        raise InvalidInputError("give exactly one of --snapshot PATH and --url URL")
    file_format(input, "--input")
    file_format(out, "--out")
    if not input.is_file():
        raise InvalidInputError(f"--input {input}: no such file")
    engine = client = None
    with contextlib.ExitStack() as stack:
        if snapshot is not None:
            from bandit.engine import Engine

            if not snapshot.is_file():
                raise InvalidInputError(f"--snapshot {snapshot}: no such file")
            engine = Engine.load(snapshot)
            spec = engine.campaign(campaign)
        else:
            from bandit.client import Client

            client = stack.enter_context(Client(url))
            spec = client.campaign(campaign)
        started = time.perf_counter()
        console = Console(stderr=True)
        bar = stack.enter_context(Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, disable=not progress, transient=True))
        task = bar.add_task(f"deciding {campaign}", total=None)
        result = decide_file(input, out, spec, engine=engine, client=client,
                             progress=lambda n, total: bar.update(task, advance=n, total=total))
    seconds = time.perf_counter() - started
    for refusal in result.refused[:20]:
        print(f"cmab decide: {input}: {refusal}", file=sys.stderr)
    if len(result.refused) > 20:
        print(f"cmab decide: ... and {len(result.refused) - 20:,} more bad rows"
              + (f" (all in {errors})" if errors else " (--errors FILE lists them all)"),
              file=sys.stderr)
    if errors is not None:
        _write_refusals(errors, result.refused)
    print(f"{out}: {result.decided:,} decisions in {seconds:.2f} s"
          + (f"; {len(result.refused):,} bad rows left out" if result.refused else ""))
    if result.refused:
        raise typer.Exit(1)


def _write_refusals(path: Path, refused: Sequence[Any]) -> None:
    import csv

    try:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["where", "column", "reason"])
            writer.writerows([r.where, r.column, r.reason] for r in refused)
    except OSError as error:
        raise InvalidInputError(f"--errors: cannot write {path}: {error.strerror}") from None


def _describe_settings_error(error: ValidationError) -> str:
    """One line naming every bad setting (CMAB_PROT=1 is "unknown setting CMAB_PROT")."""
    problems = []
    for e in error.errors(include_url=False):
        name = ".".join(str(part) for part in e["loc"])
        problems.append(f"unknown setting {name}" if e["type"] == "extra_forbidden"
                        else f"setting {name}: {e['msg']}")
    return "; ".join(problems)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cmab`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv) or ["--help"]
    try:
        # Outside standalone mode usage errors reach us instead of being drawn as a Rich panel.
        code = app(args=args, prog_name="cmab", standalone_mode=False)
    except typer.TyperException as error:  # Typer's usage errors (bad option, value, command)
        return _fail(error.format_message(), error.exit_code)
    except BanditError as error:
        return _fail(str(error), USAGE_ERROR)
    except typer.Abort:
        return _fail("aborted", 1)
    # Typer returns the command's value (None on success) or the code of an explicit exit.
    return code if isinstance(code, int) else 0


def _fail(message: str, code: int) -> int:
    # One line, whatever the message: scripts and log scrapers read the last line of stderr.
    print(f"cmab: error: {' '.join(message.split())}", file=sys.stderr)
    return code


@app.command("ope-compare")
def ope_compare(
    env: Annotated[EnvName, typer.Option(help="Environment with known truth.")] = EnvName.linear,
    events: Annotated[int, typer.Option(min=2, help="Events per simulated log.")] = 5000,
    replications: Annotated[int, typer.Option(min=1, help="Simulated logs.")] = 300,
    estimators: Annotated[
        str, typer.Option(help="Comma-separated among ips, snips, dm, dr, sndr, switch-dr, dr-os.")
    ] = "ips,snips,dm,dr,sndr,switch-dr,dr-os",
    switch_tau: Annotated[float, typer.Option(
        min=0.0, help="Switch-DR: weights above this go to DM alone (inf: DR).")] = 5.0,
    os_lambda: Annotated[float, typer.Option(
        min=0.0, help="DR-OS: shrinkage lambda w / (w^2 + lambda) (inf: DR).")] = 10.0,
    n_boot: Annotated[int, typer.Option(min=1, help="Bootstrap resamples per log.")] = 200,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the environment, policies and logs.")
                    ] = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the scores to this JSON file.")
                   ] = None,
) -> None:
    """Score the off-policy estimators on simulated logs with known truth: relative error
    and 95% interval coverage per estimator (a half-uniform logging policy, a good target)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from simulators.offline.compare import HEADER, compare_estimators, softmax_problem

    problem = softmax_problem(env.value, seed=seed)
    chosen = [e.strip() for e in estimators.split(",") if e.strip()]
    result = compare_estimators(problem, events=events, replications=replications,
                                estimators=chosen, switch_tau=switch_tau, os_lambda=os_lambda,
                                n_boot=n_boot, seed=seed)
    table = Table(title=f"{problem.name}: true value {result.truth:.5f}; {replications} logs of "
                        f"{events:,} events")
    for i, column in enumerate(HEADER):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in result.rows():
        table.add_row(*row)
    Console().print(table)
    if out is not None:
        try:
            out.write_text(json.dumps(result.to_dict(), allow_nan=False) + "\n")
        except OSError as error:
            raise InvalidInputError(f"--out: cannot write {out}: {error.strerror}") from None
        print(f"scores: {out}")

if __name__ == "__main__":
    sys.exit(main())
