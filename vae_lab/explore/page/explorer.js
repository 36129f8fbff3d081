// The page of python -m vae_lab.explore: one column per run, every image decoded here, in the page.
//
// Each data/run-N.js pushes one run's export (vae_lab/explore/__init__.py, export_run) onto
// window.VAE_LAB_RUNS: its decoder as base64 float32 weights, the 2-d map of its test codes, the
// latent dimensions in order of information, a few test images with their codes, its settings
// and numbers. A column holds one latent code z (and a label, for a CVAE); the map, the sliders
// and the test images change it, and with "runs move together" a change goes to every column: the
// same map point, the same slider position (the k-th most informative dimension of each run), the
// same test image, the same label.
"use strict";
(function () {
  const RUNS = window.VAE_LAB_RUNS || [];
  // matplotlib's tab10, as the run's latent_scatter.png colours the digits
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const MAP_SIZE = 240;  // CSS pixels of a map
  // one half-width for every map and slider, so that a point or position is the same in every column
  const EXTENT = Math.max(3, ...RUNS.map(run => run.extent));

  function bytes(base64) {
    const text = atob(base64), out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }

  function floats(base64) {
    const b = bytes(base64);  // the export writes little-endian float32, which every browser's platform is
    return new Float32Array(b.buffer, b.byteOffset, b.length / 4);
  }

  // The decoder's forward pass: Linear layers (weight: out x in, row-major), a ReLU between them and
  // the sigmoid after the last (the image mean of bce and mse). Buffers are made once: a decode
  // allocates nothing. Returns the C*H*W pixels in [0, 1], channel-major like torch's (C, H, W).
  function makeDecoder(spec) {
    const layers = spec.layers.map(l => ({ n: l.in, m: l.out, w: floats(l.weight), b: floats(l.bias), y: new Float32Array(l.out) }));
    const input = new Float32Array(layers[0].n);
    function run() {
      let x = input;
      for (let k = 0; k < layers.length; k++) {
        const { n, m, w, b, y } = layers[k], last = k === layers.length - 1;
        for (let j = 0; j < m; j++) {
          let s = b[j];
          const row = j * n;
          for (let i = 0; i < n; i++) s += w[row + i] * x[i];
          y[j] = last ? 1 / (1 + Math.exp(-s)) : (s > 0 ? s : 0);
        }
        x = y;
      }
      return x;
    }
    return { input, run };
  }

  function element(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (key === "class") node.className = value; else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);  // strings become text nodes: nothing is parsed as HTML
    return node;
  }

  function format(value) {
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value)) return String(value);
    if (value !== 0 && Math.abs(value) < 0.01) return value.toExponential(1);
    return Math.abs(value) >= 1000 ? value.toPrecision(4) : value.toFixed(Math.abs(value) < 10 ? 3 : 2);
  }

  // draw C*H*W pixels in [0, 1] into a canvas's ImageData at (left, top)
  function paint(context, pixels, shape, left = 0, top = 0) {
    const [c, h, w] = shape, image = context.createImageData(w, h), plane = h * w;
    for (let p = 0; p < plane; p++) {
      for (let k = 0; k < 3; k++) image.data[4 * p + k] = Math.round(255 * pixels[(c === 3 ? k : 0) * plane + p]);
      image.data[4 * p + 3] = 255;
    }
    context.putImageData(image, left, top);
  }

  // the settings whose values differ between the runs: they name the columns
  const DIFFERING = new Set();
  for (const run of RUNS) {
    for (const key of Object.keys(run.settings)) {
      if (new Set(RUNS.map(r => JSON.stringify(r.settings[key]))).size > 1) DIFFERING.add(key);
    }
  }

  class Column {
    constructor(run, index) {
      this.run = run;
      this.index = index;
      this.decoder = makeDecoder(run.decoder);
      this.pick = 0;
      this.z = Float32Array.from(run.picks.codes[0]);
      this.label = run.num_classes ? run.picks.labels[0] : null;
      this.preview = null;  // the code under the pointer, shown while it is over a map
      this.milliseconds = 0;
      this.build();
    }

    // pixels (C*H*W, in [0, 1]) of the code z (z_dim) and a label (a CVAE's; ignored otherwise)
    decode(z, label) {
      const input = this.decoder.input, z_dim = this.run.z_dim;
      input.set(z);
      if (this.run.num_classes) {
        input.fill(0, z_dim);
        input[z_dim + label] = 1;  // decoder_input: z followed by the one-hot label
      }
      return this.decoder.run();
    }

    // the code of a map point (a, b): center + a * axes[0] + b * axes[1]
    codeAt(a, b) {
      const { center, axes } = this.run.map;
      return Float32Array.from(center, (c, d) => c + a * axes[0][d] + b * axes[1][d]);
    }

    pointOf(z) {
      const { center, axes } = this.run.map;
      return axes.map(axis => axis.reduce((sum, v, d) => sum + v * (z[d] - center[d]), 0));
    }

    build() {
      const run = this.run, [c, h, w] = run.image_shape;
      const named = [...DIFFERING].filter(key => key in run.settings).map(key => `${key}=${format(run.settings[key])}`);
      this.node = element("section", { class: "column", "data-index": this.index },
        element("h2", { title: run.folder }, run.title),
        element("p", { class: "differs" }, named.join("  ") || `z_dim=${run.z_dim}`));

      // the map: the test codes, coloured by label
      this.map = element("canvas", { class: "map", width: MAP_SIZE, height: MAP_SIZE });
      this.points = this.drawPoints();
      const share = k => Math.round(100 * run.map.explained[k]);
      const axisNames = run.map.kind === "pca"
        ? `PCA of the ${run.z_dim}-d codes: PC1 (${share(0)} %) → , PC2 (${share(1)} %) ↑`
        : run.z_dim === 1 ? "z0 →" : "z0 → , z1 ↑";
      this.node.append(this.map, element("p", { class: "note" }, `${run.map.points.length} test codes; ${axisNames}`));
      const toPoint = event => {
        const box = this.map.getBoundingClientRect();
        return [((event.clientX - box.left) / box.width * 2 - 1) * EXTENT, (1 - (event.clientY - box.top) / box.height * 2) * EXTENT];
      };
      this.map.addEventListener("pointermove", event => {
        const [a, b] = toPoint(event);
        act(this, column => { column.preview = column.codeAt(a, b); });
        if (event.buttons) act(this, column => { column.z = column.codeAt(a, b); });
      });
      this.map.addEventListener("pointerdown", event => {
        const [a, b] = toPoint(event);
        act(this, column => { column.z = column.codeAt(a, b); column.pick = -1; });
      });
      this.map.addEventListener("pointerleave", () => act(this, column => { column.preview = null; }));

      // the decoded image, and how long its decode took
      this.image = element("canvas", { class: "decoded", width: w, height: h });
      this.timing = element("p", { class: "note timing" });
      this.node.append(element("div", { class: "decoded-box" }, this.image), this.timing);

      // the test images to start from
      const picks = element("div", { class: "picks" }), pixels = bytes(run.picks.images), size = c * h * w;
      this.thumbnails = run.picks.index.map((index, i) => {
        const thumbnail = element("canvas", { width: w, height: h, title: `test image ${index} (label ${run.picks.labels[i]})` });
        paint(thumbnail.getContext("2d"), Float32Array.from(pixels.subarray(i * size, (i + 1) * size), v => v / 255), run.image_shape);
        thumbnail.addEventListener("click", () => act(this, column => column.choose(i)));
        picks.append(thumbnail);
        return thumbnail;
      });
      this.node.append(element("p", { class: "note" }, "start from a test image (its posterior mean):"), picks);

      if (run.num_classes) {  // a CVAE: the label is a choice
        this.labelChoice = element("select", { class: "label" },
          ...Array.from({ length: run.num_classes }, (_, k) => element("option", { value: k }, String(k))));
        this.labelChoice.addEventListener("change", () => {
          const label = Number(this.labelChoice.value);
          act(this, column => { if (column.run.num_classes > label) column.label = label; });
        });
        this.node.append(element("label", { class: "choice" }, "label ", this.labelChoice));
      }

      // one slider per latent dimension, most informative first
      const sliders = element("div", { class: "sliders" });
      this.sliders = run.order.map((dimension, k) => {
        const slider = element("input", { type: "range", min: -EXTENT, max: EXTENT, step: 0.01, "data-rank": k });
        const value = element("span", { class: "value" });
        slider.addEventListener("input", () => {
          const v = Number(slider.value);
          act(this, column => { if (k < column.run.z_dim) column.z[column.run.order[k]] = v; });
        });
        const measure = run.information_kind === "KL" ? "mean KL (nats)" : "variance of the mean";
        sliders.append(element("label", { class: "slider", title: `${measure} over the test codes` },
          element("span", { class: "name" }, `z${dimension}`),
          slider, value,
          element("span", { class: "information" }, `${run.information_kind} ${format(run.information[dimension])}`)));
        return { slider, value, dimension };
      });
      const dimensions = `${run.z_dim} latent dimension${run.z_dim > 1 ? "s" : ""}`;
      this.node.append(element("p", { class: "note" }, `${dimensions}, most informative first:`), sliders);

      if (run.samples) {  // a learned prior: samples from it, decoded here (with the chosen label)
        this.samples = element("canvas", { class: "samples", width: 4 * w, height: Math.ceil(run.samples.length / 4) * h });
        this.node.append(element("p", { class: "note" }, `${run.samples.length} samples of its prior (${run.prior}):`), this.samples);
      }

      this.node.append(this.table("final losses", run.final), this.table("metrics.json", run.metrics),
        this.table("settings", run.settings, true));
    }

    table(title, values, all = false) {
      const keys = Object.keys(values);
      if (!keys.length) return element("span");
      const rows = keys.map(key => element("tr", { class: DIFFERING.has(key) ? "differs" : "" },
        element("th", {}, key), element("td", {}, format(values[key]))));
      const details = element("details", { class: "numbers" }, element("summary", {}, title), element("table", {}, ...rows));
      if (!all) details.open = true;
      return details;
    }

    drawPoints() {
      const canvas = element("canvas", { width: MAP_SIZE, height: MAP_SIZE }), context = canvas.getContext("2d");
      const { points, labels } = this.run.map, scale = MAP_SIZE / (2 * EXTENT);
      context.fillStyle = "#fff";
      context.fillRect(0, 0, MAP_SIZE, MAP_SIZE);
      context.strokeStyle = "#ddd";
      context.beginPath();
      context.moveTo(MAP_SIZE / 2, 0); context.lineTo(MAP_SIZE / 2, MAP_SIZE);
      context.moveTo(0, MAP_SIZE / 2); context.lineTo(MAP_SIZE, MAP_SIZE / 2);
      context.stroke();
      context.globalAlpha = 0.6;
      points.forEach(([a, b], i) => {
        context.fillStyle = labels[i] >= 0 ? PALETTE[labels[i] % PALETTE.length] : "#777";
        context.fillRect((a + EXTENT) * scale - 1, (EXTENT - b) * scale - 1, 2.5, 2.5);
      });
      return canvas;
    }

    choose(i) {
      const picks = this.run.picks;
      if (i >= picks.codes.length) return;
      this.pick = i;
      this.z = Float32Array.from(picks.codes[i]);
      if (this.run.num_classes) this.label = picks.labels[i];
    }

    draw() {
      const run = this.run, z = this.preview || this.z;
      const start = performance.now();
      const pixels = this.decode(z, this.label);
      this.milliseconds = performance.now() - start;
      paint(this.image.getContext("2d"), pixels, run.image_shape);
      this.timing.textContent = `decoded in ${this.milliseconds.toFixed(2)} ms${this.preview ? ", the point under the pointer" : ""}`;

      const context = this.map.getContext("2d"), scale = MAP_SIZE / (2 * EXTENT);
      context.drawImage(this.points, 0, 0);
      const mark = (point, colour, radius) => {
        const [a, b] = point;
        context.strokeStyle = colour;
        context.lineWidth = 2;
        context.beginPath();
        context.arc((a + EXTENT) * scale, (EXTENT - (b || 0)) * scale, radius, 0, 2 * Math.PI);
        context.stroke();
      };
      mark(this.pointOf(this.z), "#000", 6);
      if (this.preview) mark(this.pointOf(this.preview), "#e00", 4);

      for (const { slider, value, dimension } of this.sliders) {
        slider.value = this.z[dimension];
        value.textContent = this.z[dimension].toFixed(2);
      }
      this.thumbnails.forEach((thumbnail, i) => thumbnail.classList.toggle("chosen", i === this.pick));
      if (this.labelChoice) this.labelChoice.value = String(this.label);
      if (this.samples && this.samplesLabel !== this.label) {
        this.samplesLabel = this.label;
        const [, h, w] = run.image_shape, samples = this.samples.getContext("2d");
        run.samples.forEach((code, i) =>
          paint(samples, this.decode(code, this.label), run.image_shape, (i % 4) * w, Math.floor(i / 4) * h));
      }
    }
  }

  const columns = RUNS.map((run, i) => new Column(run, i));
  let frame = null;

  // apply change(column) to this column, or to every column when they move together; draw once per frame
  function act(source, change) {
    for (const column of document.getElementById("together").checked ? columns : [source]) {
      change(column);
      column.dirty = true;
    }
    if (frame === null) frame = requestAnimationFrame(drawDirty);
  }

  function drawDirty() {
    frame = null;
    for (const column of columns) if (column.dirty) { column.dirty = false; column.draw(); }
  }

  const main = document.getElementById("columns");
  if (!columns.length) main.append(element("p", {}, "No runs: python -m vae_lab.explore <run or sweep folder> writes them."));
  for (const column of columns) { main.append(column.node); column.draw(); }

  const labels = new Set(RUNS.flatMap(run => run.map.labels));
  const legend = document.getElementById("legend");
  [...labels].sort((a, b) => a - b).slice(0, PALETTE.length).forEach(label =>
    legend.append(element("span", { class: "swatch", style: `background:${PALETTE[label % PALETTE.length]}` }), ` ${label} `));

  // for tests and measurements: decode(i, z, label) -> pixels of column i as a plain array;
  // timeDecode(i, n) -> mean milliseconds of n decodes of random codes
  window.vaeLab = {
    columns,
    decode: (i, z, label = 0) => Array.from(columns[i].decode(Float32Array.from(z), label)),
    timeDecode(i, n = 200) {
      const column = columns[i], z = new Float32Array(column.run.z_dim);
      const start = performance.now();
      for (let k = 0; k < n; k++) {
        for (let d = 0; d < z.length; d++) z[d] = 2 * Math.random() - 1;
        column.decode(z, k % Math.max(1, column.run.num_classes));
      }
      return (performance.now() - start) / n;
    },
    ready: true,
  };
})();
