// MathJax renders the \( ... \) and \[ ... \] that pymdownx.arithmatex wraps in
// class="arithmatex" (nothing else on a chapter page is typeset), and on the notebook
// pages the $ ... $ and $$ ... $$ of the markdown cells, as Jupyter does. It is served
// with the site (javascripts/vendor/mathjax/), so formulas render offline and where CDNs
// are blocked.
const notebookPage = document.querySelector(".jupyter-wrapper") !== null;
window.MathJax = {
  tex: notebookPage
    ? {
        inlineMath: [["$", "$"], ["\\(", "\\)"]],
        displayMath: [["$$", "$$"], ["\\[", "\\]"]],
        processEscapes: true,
        processEnvironments: true,
      }
    : {
        inlineMath: [["\\(", "\\)"]],
        displayMath: [["\\[", "\\]"]],
        processEscapes: true,
        processEnvironments: true,
      },
  // MathJax's defaults on a notebook page: all text but <pre>, <code> and the like
  options: notebookPage ? {} : { ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex" },
  svg: { fontCache: "global" },
};

// MathJax typesets the page by itself once it has loaded. Material's document$ also
// fires for the first page, possibly before MathJax is ready: typeset only if it is.
document$.subscribe(() => {
  if (window.MathJax && typeof MathJax.typesetPromise === "function") {
    MathJax.typesetPromise();
  }
});
