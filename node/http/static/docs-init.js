// Starts Swagger UI on /docs. A static file: the node's Content-Security-Policy runs no
// inline script. The page names the OpenAPI document and, for a console session, the
// session's CSRF token, which "Try it out" sends with each state-changing request.
(function () {
  "use strict";
  function start() {
    var root = document.getElementById("swagger-ui");
    var csrf = root.getAttribute("data-csrf");
    window.ui = SwaggerUIBundle({
      url: root.getAttribute("data-openapi"),
      dom_id: "#swagger-ui",
      deepLinking: true,
      persistAuthorization: false,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
      layout: "BaseLayout",
      requestInterceptor: function (request) {
        if (csrf && request.method && request.method.toUpperCase() !== "GET") {
          request.headers["X-CSRF-Token"] = csrf;
        }
        return request;
      }
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
