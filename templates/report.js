(function () {
  "use strict";
  var data = document.getElementById("auditkit-charts");
  var specs = data ? JSON.parse(data.textContent) : {};
  var options = {
    renderer: "svg",
    actions: { export: true, source: false, compiled: false, editor: false },
    downloadFileName: "auditkit-chart"
  };
  var nodes = document.querySelectorAll("[data-chart]");
  Array.prototype.forEach.call(nodes, function (node) {
    var name = node.getAttribute("data-chart");
    var spec = Object.prototype.hasOwnProperty.call(specs, name) ? specs[name] : null;
    if (!spec) {
      node.setAttribute("data-chart-state", "missing");
      node.textContent = "Chart data missing.";
      return;
    }
    window.vegaEmbed(node, spec, options).then(function () {
      node.setAttribute("data-chart-state", "drawn");
    }).catch(function (error) {
      node.setAttribute("data-chart-state", "failed");
      node.textContent = "This chart could not be drawn; the table below holds the same numbers.";
      console.error("auditkit chart " + name + ": " + error);
    });
  });
  window.addEventListener("beforeprint", function () {
    Array.prototype.forEach.call(document.querySelectorAll("details"), function (d) {
      d.setAttribute("open", "");
    });
  });
})();
