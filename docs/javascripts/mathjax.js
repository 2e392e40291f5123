// MathJax renders the \( ... \) and \[ ... \] that pymdownx.arithmatex wraps in
// class="arithmatex". It is served with the site (javascripts/vendor/mathjax/), so
// formulas render offline and where CDNs are blocked.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: { ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex" },
  svg: { fontCache: "global" },
};

// MathJax typesets the page by itself once it has loaded. Material's document$ also
// fires for the first page, possibly before MathJax is ready: typeset only if it is.
document$.subscribe(() => {
  if (window.MathJax && typeof MathJax.typesetPromise === "function") {
    MathJax.typesetPromise();
  }
});
