() => {
  // Two behaviours Gradio 6 does not offer, written by hand (see ui/page.py). Both listen on the document,
  // so they work whenever Gradio (re)renders the components, and both only forward to Gradio's own events.

  // 1. Enter in a slider's number box ends the edit as leaving the box does. Gradio fires the slider's
  //    "release" (which re-runs post-processing) on blur and pointer-up, never on Enter.
  document.addEventListener("keydown", (event) => {
    const box = event.target;
    if (event.key !== "Enter" || !(box instanceof HTMLInputElement) || box.type !== "number") return;
    const block = box.closest(".block");
    if (!block || !block.querySelector("input[type=range]")) return;
    event.preventDefault();
    box.blur(); // Gradio: release with the typed value, then the box shows it clamped to the range
  }, true);

  // 2. The annotated result answers the pointer on its masks, not only on its legend chips: hovering a mask
  //    shows its label and highlights it as hovering its chip does; clicking it clicks the chip, which fires
  //    the AnnotatedImage's "select" event (the details line). Where masks overlap, the smallest one wins.
  const RESULT = "#result";
  const alphas = new Map(); // mask image URL -> {width, height, alpha (Uint8Array), area}

  function maskData(img) {
    const key = img.currentSrc || img.src;
    if (alphas.has(key)) return alphas.get(key);
    if (!img.complete || !img.naturalWidth) return null;
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(img, 0, 0);
    const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
    const alpha = new Uint8Array(canvas.width * canvas.height);
    let area = 0;
    for (let i = 0; i < alpha.length; i++) {
      alpha[i] = rgba[4 * i + 3];
      if (alpha[i]) area++;
    }
    const entry = { width: canvas.width, height: canvas.height, alpha, area };
    if (alphas.size > 256) alphas.clear();
    alphas.set(key, entry);
    return entry;
  }

  // The image pixel under the pointer: the base image is scaled to fit its box, centred (object-fit: contain).
  function pixelAt(base, event) {
    const box = base.getBoundingClientRect();
    const scale = Math.min(box.width / base.naturalWidth, box.height / base.naturalHeight);
    if (!scale) return null;
    const left = box.left + (box.width - base.naturalWidth * scale) / 2;
    const top = box.top + (box.height - base.naturalHeight * scale) / 2;
    const x = Math.floor((event.clientX - left) / scale);
    const y = Math.floor((event.clientY - top) / scale);
    if (x < 0 || y < 0 || x >= base.naturalWidth || y >= base.naturalHeight) return null;
    return { x, y };
  }

  function maskAt(root, event) {
    const base = root.querySelector("img.base-image");
    if (!base || !base.naturalWidth || !event.target.closest(".image-container")) return -1;
    const pixel = pixelAt(base, event);
    if (!pixel) return -1;
    let best = -1;
    let bestArea = Infinity;
    root.querySelectorAll("img.mask").forEach((img, index) => {
      const mask = maskData(img);
      if (!mask || mask.width !== base.naturalWidth || mask.height !== base.naturalHeight) return;
      if (mask.alpha[pixel.y * mask.width + pixel.x] && mask.area < bestArea) {
        best = index;
        bestArea = mask.area;
      }
    });
    return best;
  }

  function chip(root, index) {
    return index < 0 ? null : root.querySelectorAll(".legend-item")[index] || null;
  }

  let hovered = { root: null, index: -1 };

  function tip(root) {
    const container = root.querySelector(".image-container");
    let label = container && container.querySelector(".mask-tip");
    if (container && !label) {
      label = document.createElement("div");
      label.className = "mask-tip";
      label.setAttribute("role", "tooltip");
      container.appendChild(label);
    }
    return label;
  }

  function hover(root, index, event) {
    if (hovered.root !== root || hovered.index !== index) {
      const before = hovered.root && chip(hovered.root, hovered.index);
      if (before) before.dispatchEvent(new MouseEvent("mouseout", { bubbles: true }));
      const now = chip(root, index);
      if (now) now.dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
      hovered = { root, index };
    }
    const label = tip(root);
    if (!label) return;
    const now = chip(root, index);
    if (!now) {
      label.style.display = "none";
      return;
    }
    const box = label.parentElement.getBoundingClientRect();
    label.textContent = now.textContent.trim();
    label.style.display = "block";
    label.style.left = `${event.clientX - box.left + 12}px`;
    label.style.top = `${event.clientY - box.top + 12}px`;
    root.querySelector(".image-container").style.cursor = "pointer";
  }

  function unhover() {
    if (!hovered.root) return;
    const before = chip(hovered.root, hovered.index);
    if (before) before.dispatchEvent(new MouseEvent("mouseout", { bubbles: true }));
    const label = hovered.root.querySelector(".mask-tip");
    if (label) label.style.display = "none";
    const container = hovered.root.querySelector(".image-container");
    if (container) container.style.cursor = "";
    hovered = { root: null, index: -1 };
  }

  document.addEventListener("mousemove", (event) => {
    const root = event.target instanceof Element ? event.target.closest(RESULT) : null;
    const index = root ? maskAt(root, event) : -1;
    if (index < 0) unhover();
    else hover(root, index, event);
  });

  document.addEventListener("click", (event) => {
    const root = event.target instanceof Element ? event.target.closest(RESULT) : null;
    if (!root || event.target.closest(".legend-item, button")) return;
    const target = chip(root, maskAt(root, event));
    if (target) target.click();
  });
}
