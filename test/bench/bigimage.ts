import * as crypto from 'node:crypto';
import { buildTar, busyboxEntries, compress, type BuiltLayer, type LayerEntry } from '../helpers/images';

// Every byte comes from fixed seeds, so the image (and its digests) is the same on every run
// and on every machine: timings of different runs compare the same work.

/** xorshift32: fast and good enough to defeat gzip, which is all it is for. */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  below(n: number): number {
    return this.next() % n;
  }
  /** Roughly log-uniform in [lo, hi): many small values, a few large, like file sizes on a distro. */
  logUniform(lo: number, hi: number): number {
    const f = (this.next() / 0x1_0000_0000) * Math.log(hi / lo);
    return Math.floor(lo * Math.exp(f));
  }
}

// Bytes that dominate x86-64 machine code; drawing from them gives "code" that deflates about
// as well as real text sections do.
const OPCODE_BYTES = [0x48, 0x89, 0x8b, 0x00, 0xff, 0xe8, 0x0f, 0x85, 0x84, 0x24, 0x83, 0xc4, 0x4c, 0x74, 0x31, 0xc0];

/**
 * Binary-like content: a mix per 512-byte run of random bytes (compressed data, constants),
 * low-entropy "code", zero padding and repeats of earlier runs (string tables, relocations).
 * Deflates to roughly half, like distro binaries and shared libraries.
 */
export function binaryData(size: number, seed: number): Buffer {
  const rng = new Rng(seed);
  const buf = Buffer.allocUnsafe(size);
  const RUN = 512;
  for (let off = 0; off < size; off += RUN) {
    const end = Math.min(size, off + RUN);
    const kind = rng.below(100);
    if (kind < 38) {
      for (let i = off; i < end; i += 4) {
        const v = rng.next();
        buf[i] = v;
        if (i + 1 < end) buf[i + 1] = v >>> 8;
        if (i + 2 < end) buf[i + 2] = v >>> 16;
        if (i + 3 < end) buf[i + 3] = v >>> 24;
      }
    } else if (kind < 72) {
      for (let i = off; i < end; i += 8) {
        let v = rng.next();
        for (let j = 0; j < 8 && i + j < end; j++, v >>>= 4) buf[i + j] = OPCODE_BYTES[v & 15];
      }
    } else if (kind < 85) {
      buf.fill(0, off, end);
    } else if (off >= RUN * 8) {
      const from = rng.below(Math.floor(off / RUN)) * RUN;
      buf.copy(buf, off, from, from + (end - off));
    } else {
      buf.fill(0x90, off, end);
    }
  }
  return buf;
}

function makeWords(rng: Rng, n: number): string[] {
  const letters = 'etaoinshrdlucmfwypvbgkjqxz';
  const words: string[] = [];
  for (let i = 0; i < n; i++) {
    let w = '';
    const len = 2 + rng.below(9);
    // Frequent letters first so the text has a natural skew.
    for (let j = 0; j < len; j++) w += letters[Math.min(rng.below(26), rng.below(26))];
    words.push(w);
  }
  return words;
}

/** Text-like content (docs, scripts, config): deflates to about a third. */
function textData(size: number, rng: Rng, words: string[]): Buffer {
  const parts: string[] = [];
  let len = 0;
  let col = 0;
  while (len < size) {
    const w = words[Math.min(rng.below(words.length), rng.below(words.length))];
    const sep = col > 60 ? '\n' : ' ';
    col = sep === '\n' ? 0 : col + w.length + 1;
    parts.push(w, sep);
    len += w.length + 1;
  }
  return Buffer.from(parts.join('')).subarray(0, size);
}

/** `count` small files in a distro-like tree under `prefix`, with the dirs created first. */
function smallFiles(prefix: string, count: number, seed: number, maxSize: number): LayerEntry[] {
  const rng = new Rng(seed);
  const words = makeWords(rng, 2000);
  const entries: LayerEntry[] = [];
  const dirs: string[] = [];
  const ndirs = Math.max(1, Math.floor(count / 25));
  const parts = prefix.split('/');
  for (let i = 1; i <= parts.length; i++) entries.push({ type: 'dir', path: parts.slice(0, i).join('/') });
  for (let d = 0; d < ndirs; d++) {
    const top = `${prefix}/${words[d % words.length]}${d}`;
    entries.push({ type: 'dir', path: top });
    dirs.push(top);
    if (d % 3 === 0) {
      entries.push({ type: 'dir', path: `${top}/sub` });
      dirs.push(`${top}/sub`);
    }
  }
  for (let f = 0; f < count; f++) {
    const dir = dirs[rng.below(dirs.length)];
    const name = `${dir}/${words[rng.below(words.length)]}-${f}`;
    const size = rng.logUniform(64, maxSize);
    // A few in ten are small binaries (.so, .pyc), the rest text.
    if (rng.below(10) < 3) {
      entries.push({ type: 'file', path: `${name}.so`, content: binaryData(size, rng.next()), mode: 0o755 });
    } else {
      entries.push({ type: 'file', path: `${name}.txt`, content: textData(size, rng, words) });
    }
    if (f % 50 === 0) entries.push({ type: 'symlink', path: `${name}.link`, target: `${words[0]}-${f}.txt` });
  }
  return entries;
}

function bigFiles(dir: string, sizes: number[], seed: number): LayerEntry[] {
  const entries: LayerEntry[] = [];
  const parts = dir.split('/');
  for (let i = 1; i <= parts.length; i++) entries.push({ type: 'dir', path: parts.slice(0, i).join('/') });
  sizes.forEach((size, i) => entries.push({ type: 'file', path: `${dir}/blob${i}.bin`, content: binaryData(size, seed * 1000 + i), mode: 0o755 }));
  return entries;
}

const MiB = 1024 * 1024;

/** The layers of the benchmark image, base first: a distro-like mix of many small and a few large files. */
export function bigImageLayerSpecs(): { name: string; entries: LayerEntry[] }[] {
  return [
    { name: 'busybox', entries: busyboxEntries() },
    { name: 'distro (6000 small files)', entries: smallFiles('usr/share', 6000, 11, 48 * 1024) },
    {
      name: 'libraries (40 x 100K-1M + 800 small)',
      entries: [
        ...bigFiles(
          'usr/lib/x86_64-linux-gnu',
          Array.from({ length: 40 }, (_, i) => 100 * 1024 + ((i * 7919) % 40) * 23 * 1024),
          21,
        ),
        ...smallFiles('usr/lib/python3/dist-packages', 800, 22, 32 * 1024),
      ],
    },
    { name: 'toolchain (2 large binaries)', entries: bigFiles('opt/toolchain/bin', [18 * MiB, 14 * MiB], 31) },
    {
      name: 'runtime (1 large + 1000 small)',
      entries: [...bigFiles('opt/runtime/lib', [24 * MiB], 41), ...smallFiles('opt/runtime/modules', 1000, 42, 24 * 1024)],
    },
    { name: 'app (1 large + config)', entries: [...bigFiles('app', [16 * MiB], 51), ...smallFiles('app/etc', 60, 52, 8 * 1024)] },
  ];
}

export interface BenchLayer extends BuiltLayer {
  name: string;
  /** Bytes of the uncompressed tar. */
  tarSize: number;
  files: number;
  fileBytes: number;
}

export async function buildBigImageLayers(): Promise<BenchLayer[]> {
  const out: BenchLayer[] = [];
  for (const spec of bigImageLayerSpecs()) {
    const raw = await buildTar(spec.entries);
    const blob = await compress(raw, 'gzip');
    const files = spec.entries.filter((e) => e.type === 'file');
    out.push({
      name: spec.name,
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      blob,
      digest: `sha256:${crypto.createHash('sha256').update(blob).digest('hex')}`,
      size: blob.length,
      diffId: `sha256:${crypto.createHash('sha256').update(raw).digest('hex')}`,
      compression: 'gzip',
      tarSize: raw.length,
      files: files.length,
      fileBytes: files.reduce((n, e) => n + e.content.length, 0),
    });
  }
  return out;
}
