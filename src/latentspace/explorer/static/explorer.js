// The latentspace explorer page: plain JavaScript, no build step, nothing loaded from elsewhere.
// The server does the model work (src/latentspace/explorer/app.py lists its API); this file
// draws the map on a <canvas> and asks for decoded images.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const HOVER_RADIUS = 8; // CSS pixels: how near the pointer a point must be to show its image
  const POINT = 3; // CSS pixels per point
  const METHODS = { pca: "PCA", tsne: "t-SNE", umap: "UMAP" };
  const PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
  ];

  const state = {
    info: null, // GET /api/info
    map: null, // GET /api/map
    screenX: null, // Float32Array: each point's position on the canvas, CSS pixels
    screenY: null,
    view: null, // {scale, offsetX, offsetY, width, height}
    base: null, // an off-screen canvas holding the drawn points
    hovered: -1,
    code: null, // the picked code (array of numbers)
    pickedAt: null, // [x, y] in map units, when the pick was a map point
    slots: { a: null, b: null, c: null },
    arithmetic: null,
    decoding: false, // a slider decode is in flight
    pending: false, // ... and the sliders moved again since it was sent
  };

  const colour = (label) =>
    label < PALETTE.length ? PALETTE[label] : `hsl(${(label * 137.508) % 360} 65% 42%)`;

  function say(text, isError = false) {
    $("status").textContent = text;
    $("status").classList.toggle("error", isError);
  }

  async function api(path, body) {
    const options = body === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    };
    const response = await fetch(path, options);
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
    return data;
  }

  // ---- the map -------------------------------------------------------------------------------
  function layout() {
    const canvas = $("map");
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const { x, y } = state.map;
    let [minX, maxX, minY, maxY] = [Infinity, -Infinity, Infinity, -Infinity];
    for (let i = 0; i < x.length; i++) {
      minX = Math.min(minX, x[i]); maxX = Math.max(maxX, x[i]);
      minY = Math.min(minY, y[i]); maxY = Math.max(maxY, y[i]);
    }
    const spanX = Math.max(maxX - minX, 1e-6);
    const spanY = Math.max(maxY - minY, 1e-6);
    // one scale for both axes: distances on the map keep their meaning
    const scale = 0.92 * Math.min(width / spanX, height / spanY);
    state.view = {
      scale, width, height,
      offsetX: width / 2 - scale * (minX + maxX) / 2,
      offsetY: height / 2 + scale * (minY + maxY) / 2,
    };
    state.screenX = new Float32Array(x.length);
    state.screenY = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) {
      [state.screenX[i], state.screenY[i]] = toScreen(x[i], y[i]);
    }
    drawBase(ratio);
    draw();
  }

  function toScreen(x, y) {
    const v = state.view;
    return [v.offsetX + v.scale * x, v.offsetY - v.scale * y];
  }

  function toMap(px, py) {
    const v = state.view;
    return [(px - v.offsetX) / v.scale, (v.offsetY - py) / v.scale];
  }

  function drawBase(ratio) {
    const canvas = $("map");
    const base = document.createElement("canvas");
    base.width = canvas.width;
    base.height = canvas.height;
    const ctx = base.getContext("2d");
    ctx.scale(ratio, ratio);
    const labels = state.map.label;
    const n = state.screenX.length;
    // drawn once into an off-screen canvas, one fillStyle per label; hovering only copies it
    const byLabel = new Map();
    for (let i = 0; i < n; i++) {
      const label = labels ? labels[i] : 0;
      if (!byLabel.has(label)) byLabel.set(label, []);
      byLabel.get(label).push(i);
    }
    ctx.globalAlpha = n > 3000 ? 0.65 : 0.85;
    for (const [label, points] of byLabel) {
      ctx.fillStyle = labels ? colour(label) : "#1f77b4";
      for (const i of points) {
        ctx.fillRect(state.screenX[i] - POINT / 2, state.screenY[i] - POINT / 2, POINT, POINT);
      }
    }
    state.base = base;
  }

  function draw() {
    const canvas = $("map");
    const ctx = canvas.getContext("2d");
    const ratio = canvas.width / state.view.width;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(state.base, 0, 0);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    if (state.hovered >= 0) {
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      ctx.arc(state.screenX[state.hovered], state.screenY[state.hovered], 5, 0, 2 * Math.PI);
      ctx.stroke();
    }
    if (state.pickedAt) {
      const [px, py] = toScreen(...state.pickedAt);
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(px - 7, py); ctx.lineTo(px + 7, py);
      ctx.moveTo(px, py - 7); ctx.lineTo(px, py + 7);
      ctx.stroke();
    }
  }

  function nearest(px, py) {
    let best = -1;
    let bestDistance = HOVER_RADIUS * HOVER_RADIUS;
    const xs = state.screenX;
    const ys = state.screenY;
    for (let i = 0; i < xs.length; i++) {
      const dx = xs[i] - px;
      const dy = ys[i] - py;
      const d = dx * dx + dy * dy;
      if (d < bestDistance) { bestDistance = d; best = i; }
    }
    return best;
  }

  function pointer(event) {
    const rect = $("map").getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  function label(index) {
    const { classes } = state.info;
    const labels = state.map.label;
    return labels && classes ? classes[labels[index]] : "";
  }

  function hover(px, py) {
    show(nearest(px, py));
  }

  function show(index) {
    if (index === state.hovered) return;
    state.hovered = index;
    const card = $("hover");
    if (index < 0) {
      card.hidden = true;
    } else {
      $("hover-image").src = `/api/image/${index}`;
      const name = label(index);
      $("hover-label").textContent = `#${index}` + (name ? ` · ${name}` : "");
      const sx = state.screenX[index];
      const sy = state.screenY[index];
      card.style.left = `${sx + 110 > state.view.width ? sx - 104 : sx + 12}px`;
      card.style.top = `${sy + 120 > state.view.height ? sy - 116 : sy + 12}px`;
      card.hidden = false;
    }
    draw();
  }

  let hoverFrame = 0;
  function onMove(event) {
    const [px, py] = pointer(event);
    cancelAnimationFrame(hoverFrame);
    hoverFrame = requestAnimationFrame(() => hover(px, py));
  }

  async function onClick(event) {
    const [px, py] = pointer(event);
    try {
      if (event.shiftKey) {
        const index = nearest(px, py);
        if (index >= 0) return await pickItem(index);
      }
      const [x, y] = toMap(px, py);
      const result = await api("/api/point", { x, y });
      state.pickedAt = [x, y];
      pick(result, `the map at (${x.toFixed(2)}, ${y.toFixed(2)})`);
    } catch (error) {
      say(error.message, true);
    }
  }

  async function pickItem(index) {
    const result = await api(`/api/item/${index}`);
    state.pickedAt = [state.map.x[index], state.map.y[index]];
    pick(result, `image #${index}` + (result.label ? ` (${result.label})` : "") + ", its own code");
  }

  // ---- the picked code and its sliders ---------------------------------------------------------
  function pick(result, from) {
    state.code = result.code.slice();
    $("picked-image").src = result.image;
    $("picked-from").textContent = `From ${from}.`;
    for (const button of document.querySelectorAll("[data-slot]")) button.disabled = false;
    syncSliders();
    draw();
    say("");
  }

  function buildSliders() {
    const { latent_dim: dims, low, high } = state.info;
    const box = $("sliders");
    for (let d = 0; d < dims; d++) {
      const row = document.createElement("label");
      row.className = "slider";
      const name = document.createElement("span");
      name.textContent = `z${d}`;
      const input = document.createElement("input");
      Object.assign(input, {
        type: "range", min: low[d], max: high[d], step: (high[d] - low[d]) / 400,
        value: (low[d] + high[d]) / 2, disabled: true,
      });
      input.dataset.dim = d;
      const value = document.createElement("output");
      value.textContent = "–";
      input.addEventListener("input", () => {
        state.code[d] = Number(input.value);
        value.textContent = state.code[d].toFixed(2);
        decodeSliders();
      });
      input.addEventListener("change", () => traverse(d));
      row.append(name, input, value);
      box.append(row);
    }
  }

  function syncSliders() {
    for (const input of $("sliders").querySelectorAll("input")) {
      const d = Number(input.dataset.dim);
      input.disabled = false;
      input.value = state.code[d];
      input.nextElementSibling.textContent = state.code[d].toFixed(2);
    }
  }

  // only the latest slider position is decoded: while one request is out, moves are coalesced
  async function decodeSliders() {
    if (state.decoding) { state.pending = true; return; }
    state.decoding = true;
    try {
      const result = await api("/api/decode", { code: state.code });
      $("picked-image").src = result.image;
      $("picked-from").textContent = "From the sliders.";
      state.pickedAt = null;
      draw();
    } catch (error) {
      say(error.message, true);
    } finally {
      state.decoding = false;
      if (state.pending) { state.pending = false; decodeSliders(); }
    }
  }

  async function traverse(dim) {
    try {
      const result = await api("/api/traverse", { code: state.code, dim, steps: 11 });
      strip($("traversal"), result.images, result.values.map((v) => `z${dim} = ${v.toFixed(2)}`));
    } catch (error) {
      say(error.message, true);
    }
  }

  function strip(box, images, titles) {
    box.replaceChildren(...images.map((src, i) => {
      const img = document.createElement("img");
      img.className = "pixels";
      img.src = src;
      img.alt = img.title = titles[i];
      return img;
    }));
  }

  // ---- items A, B, C: interpolation and arithmetic -------------------------------------------
  function useAs(slot) {
    state.slots[slot] = { code: state.code.slice(), image: $("picked-image").src };
    $(`slot-${slot}`).src = state.slots[slot].image;
    const { a, b, c } = state.slots;
    $("interpolate").disabled = !(a && b);
    $("arithmetic").disabled = !(a && b && c);
  }

  async function interpolate() {
    const steps = Math.min(64, Math.max(2, Math.round(Number($("steps").value)) || 10));
    try {
      const result = await api("/api/interpolate", {
        a: state.slots.a.code, b: state.slots.b.code, steps,
      });
      const titles = result.lerp.map((_, i) => `t = ${(i / (steps - 1)).toFixed(2)}`);
      strip($("lerp"), result.lerp, titles);
      strip($("slerp"), result.slerp, titles);
    } catch (error) {
      say(error.message, true);
    }
  }

  async function arithmetic() {
    const { a, b, c } = state.slots;
    try {
      state.arithmetic = await api("/api/arithmetic", { a: a.code, b: b.code, c: c.code });
      $("arithmetic-image").src = state.arithmetic.image;
      $("arithmetic-pick").disabled = false;
    } catch (error) {
      say(error.message, true);
    }
  }

  // ---- start -------------------------------------------------------------------------------
  function legend() {
    const { classes } = state.info;
    const box = $("legend");
    if (!classes || !state.map.label) return;
    box.replaceChildren(...classes.map((name, i) => {
      const item = document.createElement("li");
      const dot = document.createElement("span");
      dot.style.background = colour(i);
      item.append(dot, name);
      return item;
    }));
  }

  async function start() {
    try {
      [state.info, state.map] = await Promise.all([api("/api/info"), api("/api/map")]);
    } catch (error) {
      say(`could not load the map: ${error.message}`, true);
      return;
    }
    const info = state.info;
    $("summary").textContent =
      `${info.run}: ${info.model}, ${info.latent_dim}-D codes of ${info.points} images of ` +
      `${info.source}, mapped by ${METHODS[info.method] || info.method} (${info.axes.join(", ")})`;
    $("click-note").textContent = `A click decodes ${info.click}.`;
    legend();
    buildSliders();
    layout();
    const canvas = $("map");
    canvas.addEventListener("mousemove", onMove);
    canvas.addEventListener("mouseleave", () => {
      cancelAnimationFrame(hoverFrame);
      show(-1);
    });
    canvas.addEventListener("click", onClick);
    for (const button of document.querySelectorAll("[data-slot]")) {
      button.addEventListener("click", () => useAs(button.dataset.slot));
    }
    $("interpolate").addEventListener("click", interpolate);
    $("arithmetic").addEventListener("click", arithmetic);
    $("arithmetic-pick").addEventListener("click", () => {
      state.pickedAt = null;
      pick(state.arithmetic, "A − B + C");
    });
    window.addEventListener("resize", layout);
    document.body.dataset.ready = "true";
  }

  // for tests and the console: where point i is drawn, in page coordinates
  window.latentExplorer = {
    state,
    pointOnPage(index) {
      const rect = $("map").getBoundingClientRect();
      return [rect.left + state.screenX[index], rect.top + state.screenY[index]];
    },
  };

  start();
})();
