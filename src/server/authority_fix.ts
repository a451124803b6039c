import { Duplex, Transform, type TransformCallback } from 'node:stream';
import type { Socket } from 'node:net';
// hpack.js has no type declarations; the little of it used here is typed below.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const hpack = require('hpack.js') as {
  decompressor: { create(opts: { table: { maxSize: number } }): HpackDecompressor };
};

interface HpackDecompressor {
  write(data: Buffer): void;
  execute(): void;
  read(): { name: string; value: string } | null;
  on(event: 'error', fn: (err: Error) => void): void;
}

/*
 * Why this exists: grpc-go before 1.52 (crictl and critest 1.26, kubelets before 1.26) sends
 * the unix socket's path as the HTTP/2 `:authority`. Node's HTTP/2 stack (nghttp2) refuses such
 * an authority with RST_STREAM PROTOCOL_ERROR before grpc-js sees the call. Newer clients send
 * `localhost`. So each connection's first request is looked at: when its authority is one
 * nghttp2 accepts, the connection passes through untouched; otherwise every request header
 * block of that connection is decoded and re-encoded with `localhost` as its authority.
 */

const PREFACE_LENGTH = 24;
const FRAME_HEADER = 9;
const TYPE_HEADERS = 0x1;
const TYPE_CONTINUATION = 0x9;
const FLAG_END_STREAM = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;
/** The peer's SETTINGS_MAX_FRAME_SIZE default: Node's server never raises it for requests. */
const MAX_FRAME = 16384;
/** Node's default SETTINGS_HEADER_TABLE_SIZE, which sizes the client's HPACK table. */
const HEADER_TABLE_SIZE = 4096;

/** RFC 3986 authority characters, which is what nghttp2 checks. */
export function isValidAuthority(value: string): boolean {
  return /^[A-Za-z0-9\-._~!$&'()*+,;=:@[\]%]*$/.test(value);
}

type Mode = 'undecided' | 'passthrough' | 'rewrite';

/** Client-to-server bytes of one connection, with bad authorities rewritten. */
export class AuthorityFix extends Transform {
  private buffered: Buffer = Buffer.alloc(0);
  private prefaceLeft = PREFACE_LENGTH;
  private mode: Mode = 'undecided';
  private readonly decoder = hpack.decompressor.create({ table: { maxSize: HEADER_TABLE_SIZE } });
  /** A header block spread over HEADERS + CONTINUATION frames, being collected. */
  private block?: { streamId: number; flags: number; fragments: Buffer[]; raw: Buffer[] };
  private decodeError?: Error;

  constructor() {
    super();
    this.decoder.on('error', (err) => (this.decodeError = err));
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.mode === 'passthrough') {
      cb(null, chunk);
      return;
    }
    try {
      this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
      this.consume();
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  private consume(): void {
    if (this.prefaceLeft > 0) {
      const n = Math.min(this.prefaceLeft, this.buffered.length);
      this.push(this.buffered.subarray(0, n));
      this.buffered = this.buffered.subarray(n);
      this.prefaceLeft -= n;
      if (this.prefaceLeft > 0) return;
    }
    while (this.buffered.length >= FRAME_HEADER) {
      if (this.mode === 'passthrough') {
        this.push(this.buffered);
        this.buffered = Buffer.alloc(0);
        return;
      }
      const length = this.buffered.readUIntBE(0, 3);
      if (this.buffered.length < FRAME_HEADER + length) return;
      const frame = this.buffered.subarray(0, FRAME_HEADER + length);
      this.buffered = this.buffered.subarray(FRAME_HEADER + length);
      this.onFrame(frame);
    }
  }

  private onFrame(frame: Buffer): void {
    const type = frame[3]!;
    const flags = frame[4]!;
    const streamId = frame.readUInt32BE(5) & 0x7fffffff;
    if (type === TYPE_HEADERS) {
      let payload = frame.subarray(FRAME_HEADER);
      let pad = 0;
      if (flags & FLAG_PADDED) {
        pad = payload[0]!;
        payload = payload.subarray(1);
      }
      if (flags & FLAG_PRIORITY) payload = payload.subarray(5);
      payload = payload.subarray(0, payload.length - pad);
      this.block = { streamId, flags, fragments: [payload], raw: [frame] };
    } else if (type === TYPE_CONTINUATION && this.block) {
      this.block.fragments.push(frame.subarray(FRAME_HEADER));
      this.block.raw.push(frame);
    } else {
      this.push(frame);
      return;
    }
    if (!(flags & FLAG_END_HEADERS)) return;
    const block = this.block!;
    this.block = undefined;
    this.onHeaderBlock(block.streamId, block.flags, Buffer.concat(block.fragments), block.raw);
  }

  private onHeaderBlock(streamId: number, flags: number, encoded: Buffer, raw: Buffer[]): void {
    const headers = this.decode(encoded);
    if (this.mode === 'undecided') {
      const authority = headers.find((h) => h.name === ':authority')?.value ?? '';
      if (isValidAuthority(authority)) {
        this.mode = 'passthrough';
        for (const f of raw) this.push(f);
        return;
      }
      this.mode = 'rewrite';
    }
    for (const h of headers) if (h.name === ':authority' && !isValidAuthority(h.value)) h.value = 'localhost';
    this.pushHeaders(streamId, flags & FLAG_END_STREAM, encodeLiterals(headers));
  }

  private decode(encoded: Buffer): { name: string; value: string }[] {
    this.decoder.write(encoded);
    this.decoder.execute();
    if (this.decodeError) throw new Error(`HTTP/2 header block could not be decoded: ${this.decodeError.message}`);
    const out: { name: string; value: string }[] = [];
    for (let h = this.decoder.read(); h !== null; h = this.decoder.read()) out.push({ name: h.name, value: h.value });
    return out;
  }

  private pushHeaders(streamId: number, endStream: number, block: Buffer): void {
    let offset = 0;
    let first = true;
    do {
      const part = block.subarray(offset, offset + MAX_FRAME);
      offset += part.length;
      const last = offset >= block.length;
      const header = Buffer.alloc(FRAME_HEADER);
      header.writeUIntBE(part.length, 0, 3);
      header[3] = first ? TYPE_HEADERS : TYPE_CONTINUATION;
      header[4] = (first ? endStream : 0) | (last ? FLAG_END_HEADERS : 0);
      header.writeUInt32BE(streamId, 5);
      this.push(Buffer.concat([header, part]));
      first = false;
    } while (offset < block.length);
  }
}

/**
 * HPACK "literal header field without indexing, new name" for every field: the server's
 * dynamic table is never used, so no encoder state has to match the server's decoder.
 */
export function encodeLiterals(headers: { name: string; value: string }[]): Buffer {
  const parts: Buffer[] = [];
  for (const { name, value } of headers) {
    parts.push(Buffer.from([0x00]), hpackString(name), hpackString(value));
  }
  return Buffer.concat(parts);
}

function hpackString(s: string): Buffer {
  const bytes = Buffer.from(s, 'latin1');
  return Buffer.concat([hpackInt(bytes.length, 7, 0x00), bytes]);
}

/** RFC 7541 5.1 integer with an N-bit prefix. */
function hpackInt(value: number, prefixBits: number, firstByteFlags: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([firstByteFlags | value]);
  const out = [firstByteFlags | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

/** The connection as the HTTP/2 server sees it: the socket, with client bytes fixed up. */
export function fixAuthority(socket: Socket): Duplex {
  const fix = new AuthorityFix();
  socket.pipe(fix);
  const duplex = Duplex.from({ readable: fix, writable: socket });
  socket.on('error', (err) => duplex.destroy(err));
  duplex.on('close', () => socket.destroy());
  return duplex;
}
