// Gallery: filter, sort and page the cards of each experiment. Cards are built with DOM calls and
// textContent only (never innerHTML), so prompts and words from the runs stay text.
(function () {
  "use strict";
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) { Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); }); }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function tile(src, caption) {
    var figure = el("figure");
    var img = el("img", {src: src, alt: caption, loading: "lazy", width: "120", height: "120"});
    figure.appendChild(img);
    figure.appendChild(el("figcaption", null, caption));
    return figure;
  }
  function formatNumber(value) {
    return Math.abs(value) >= 1000 || (Math.abs(value) < 0.001 && value !== 0) ? value.toExponential(3) : value.toPrecision(4);
  }
  function Gallery(root) {
    var data = JSON.parse(root.querySelector("script.gallery-data").textContent);
    var pageSize = parseInt(root.getAttribute("data-page-size"), 10) || 24;
    var cardsNode = root.querySelector(".cards");
    var status = root.querySelector(".status");
    var pageLabel = root.querySelector(".page");
    var controls = {};
    root.querySelectorAll("[data-filter], [data-sort]").forEach(function (node) {
      controls[node.getAttribute("data-filter") || node.getAttribute("data-sort")] = node;
      node.addEventListener("change", function () { page = 0; render(); });
    });
    var page = 0;
    function visibleVariants(card, method) {
      return card.variants.filter(function (v) { return !method || v.method === method; });
    }
    function selected() {
      var method = controls.method.value, dataset = controls.dataset.value, word = controls.word.value;
      var metric = controls.metric.value, descending = controls.order.value === "desc";
      var chosen = data.cards.filter(function (card) {
        return (!dataset || card.dataset === dataset) && (!word || card.words.indexOf(word) >= 0) &&
          visibleVariants(card, method).length > 0;
      });
      if (metric) {
        var key = function (card) {
          var values = visibleVariants(card, method).map(function (v) { return v.metrics[metric]; })
            .filter(function (x) { return typeof x === "number"; });
          if (!values.length) { return null; }
          return descending ? Math.max.apply(null, values) : Math.min.apply(null, values);
        };
        chosen = chosen.map(function (card) { return [key(card), card]; });
        chosen.sort(function (a, b) {
          if (a[0] === null) { return b[0] === null ? 0 : 1; }
          if (b[0] === null) { return -1; }
          return descending ? b[0] - a[0] : a[0] - b[0];
        });
        chosen = chosen.map(function (pair) { return pair[1]; });
      }
      return chosen;
    }
    function legend(entries) {
      var list = el("ul", {"class": "legend"});
      entries.forEach(function (entry) {
        var item = el("li");
        var swatch = el("span", {"class": "swatch"});
        swatch.style.backgroundColor = entry.colour;
        item.appendChild(swatch);
        item.appendChild(el("span", null, entry.name));
        list.appendChild(item);
      });
      return list;
    }
    // One card per sample: the image once and the truth (with its class legend) in the first row,
    // then one row per predictor: its name on a line of its own, its maps (one per word) and its mask.
    function buildCard(card, method, word) {
      var node = el("article", {"class": "card", "data-sample": card.sample, "data-dataset": card.dataset});
      node.appendChild(el("h4", null, card.dataset + " / " + card.sample));
      node.appendChild(el("p", {"class": "prompt"}, card.prompt));
      var top = el("div", {"class": "tiles sample"});
      if (card.image) { top.appendChild(tile(card.image, "image")); }
      if (card.truth) {
        var truth = tile(card.truth, "ground truth");
        truth.classList.add("truth");
        if (card.truth_legend.length) { truth.appendChild(legend(card.truth_legend)); }
        top.appendChild(truth);
      }
      if (top.childNodes.length) { node.appendChild(top); }
      var variants = el("div", {"class": "variants"});
      node.appendChild(variants);
      visibleVariants(card, method).forEach(function (variant) {
        var part = el("div", {"class": "variant", "data-method": variant.method});
        part.appendChild(el("div", {"class": "label"}, variant.label));
        var names = Object.keys(variant.metrics).sort();
        if (names.length) {
          part.appendChild(el("div", {"class": "metrics"}, names.map(function (n) {
            return n + " = " + formatNumber(variant.metrics[n]);
          }).join(" · ")));
        }
        var tiles = el("div", {"class": "tiles"});
        if (variant.missing) { part.appendChild(el("div", {"class": "metrics"}, "sample not in the store")); }
        if (variant.image) { tiles.appendChild(tile(variant.image, "its image")); }
        variant.overlays.forEach(function (overlay) {
          if (!word || overlay.word === word) { tiles.appendChild(tile(overlay.src, overlay.word)); }
        });
        if (variant.segmentation) { tiles.appendChild(tile(variant.segmentation, "mask")); }
        if (tiles.childNodes.length) { part.appendChild(tiles); }
        variants.appendChild(part);
      });
      return node;
    }
    function render() {
      var chosen = selected();
      var pages = Math.max(1, Math.ceil(chosen.length / pageSize));
      page = Math.min(Math.max(page, 0), pages - 1);
      var method = controls.method.value, word = controls.word.value;
      var fragment = document.createDocumentFragment();
      chosen.slice(page * pageSize, (page + 1) * pageSize).forEach(function (card) {
        fragment.appendChild(buildCard(card, method, word));
      });
      cardsNode.replaceChildren(fragment);
      status.textContent = chosen.length + " of " + data.cards.length + " samples";
      pageLabel.textContent = "page " + (page + 1) + " of " + pages;
      root.querySelector("[data-page=prev]").disabled = page === 0;
      root.querySelector("[data-page=next]").disabled = page >= pages - 1;
    }
    root.querySelector("[data-page=prev]").addEventListener("click", function () { page -= 1; render(); });
    root.querySelector("[data-page=next]").addEventListener("click", function () { page += 1; render(); });
    render();
  }
  document.querySelectorAll("[data-gallery]").forEach(function (root) { Gallery(root); });
})();
