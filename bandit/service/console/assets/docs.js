// /docs: Swagger UI from the swagger-ui-bundle package, over the service's OpenAPI document.
// That package ships Swagger UI 4, which reads OpenAPI 3.0 and refuses a 3.1 document whole
// ("does not specify a valid version field"), and FastAPI writes 3.1: the page labels its own
// copy 3.0.3 to render it. /openapi.json itself is unchanged.
"use strict";
(() => {
  const root = document.getElementById("swagger-ui");
  fetch(root.dataset.openapi, { cache: "no-store" })
    .then((response) => {
      if (!response.ok) throw new Error(`${root.dataset.openapi} answered ${response.status}`);
      return response.json();
    })
    .then((document_) => {
      root.textContent = "";
      SwaggerUIBundle({
        spec: { ...document_, openapi: "3.0.3" },
        dom_id: "#swagger-ui",
        layout: "BaseLayout",
        deepLinking: true,
        showExtensions: true,
        showCommonExtensions: true,
        validatorUrl: null, // no badge from validator.swagger.io: nothing leaves this service
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
      });
    })
    .catch((error) => {
      root.textContent = `The API document could not be loaded: ${error.message}`;
    });
})();
