// Runix dashboard: small progressive enhancements. Every page and form works without this file; the server checks
// everything again.
(function () {
  "use strict";

  // Forms marked data-confirm ask before a destructive action.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  // The deploy form: an archive the server would refuse for its size is refused before it is uploaded, and the
  // button shows that the upload is on its way.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.dataset.maxBytes || event.defaultPrevented) return;
    var problem = form.parentElement.querySelector("#deploy-problem");
    var button = form.querySelector("button[type=submit]");
    var file = form.elements.source.files[0];
    if (file && file.size > Number(form.dataset.maxBytes)) {
      event.preventDefault();
      problem.textContent = file.name + " is " + (file.size / 1048576).toFixed(1) + " MiB: the largest archive " +
        "accepted is " + form.dataset.maxLabel + ". Leave out dependency and build folders.";
      problem.hidden = false;
      return;
    }
    problem.hidden = true;
    button.disabled = true;
    button.dataset.label = button.textContent;
    button.textContent = "Uploading…";
  });

  // Coming back with the browser's Back button shows the page as it was left: re-enable the deploy button.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-max-bytes] button[data-label]").forEach(function (button) {
      button.disabled = false;
      button.textContent = button.dataset.label;
    });
  });
})();
