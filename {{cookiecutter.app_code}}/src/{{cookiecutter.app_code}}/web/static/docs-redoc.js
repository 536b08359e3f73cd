/* Starts ReDoc on /redoc (api/routes/docs.py): the page's CSP forbids inline script, so the
 * start lives here; the OpenAPI document's URL is in <div id="redoc" data-openapi-url>.
 */
"use strict";
(function () {
  var root = document.getElementById("redoc");
  Redoc.init(root.dataset.openapiUrl, {}, root);
})();
