// Swagger UI over the server's own OpenAPI document (no inline script: the page's CSP allows
// scripts from this server only). "Authorize" takes a key for "Try it out"; it stays in memory.
window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false,
    tryItOutEnabled: false,
  });
});
