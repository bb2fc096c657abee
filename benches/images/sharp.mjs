// The peer: sharp (libvips) makes the three thumbnails of the same photo, each from the same
// buffer, as the AWS version of the pipeline does. Usage: node sharp.mjs PHOTO ROUNDS → JSON with
// the median milliseconds of the three together. Run under `taskset -c 0` with one libvips thread.
import { readFileSync } from "node:fs";
import sharp from "sharp";

sharp.concurrency(1);
sharp.cache(false);
const [photo, rounds = "15"] = process.argv.slice(2);
const input = readFileSync(photo);

async function thumbnails() {
  let bytes = 0;
  for (const width of [100, 300, 500]) {
    const out = await sharp(input).resize({ width }).jpeg({ quality: 80 }).toBuffer();
    bytes += out.length;
  }
  return bytes;
}

await thumbnails();
const times = [];
for (let i = 0; i < Number(rounds); i++) {
  const started = process.hrtime.bigint();
  await thumbnails();
  times.push(Number(process.hrtime.bigint() - started) / 1e6);
}
times.sort((a, b) => a - b);
console.log(JSON.stringify({ sharp: sharp.versions.sharp, vips: sharp.versions.vips, median_ms: times[times.length >> 1] }));
