"""The stream side: the worker that joins impressions and clicks and learns per partition
(``streams.worker``) over its transports (Kafka, in-process), the state follower and publisher
the decision service uses, the VW learner, and the local broker."""
