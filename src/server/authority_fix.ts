import { Duplex, Transform, type TransformCallback } from 'node:stream';
import type { Socket } from 'node:net';
// eslint-disable-next-line @typescript-eslint/no-require-imports -- hpack.js has no type declarations to import; the little of it used here is typed below.
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
    const type = frame[3];
    const flags = frame[4];
    const streamId = frame.readUInt32BE(5) & 0x7fffffff;
    if (type === TYPE_HEADERS) {
      let payload = frame.subarray(FRAME_HEADER);
      let pad = 0;
      if (flags & FLAG_PADDED) {
        // An empty PADDED frame is malformed: no pad, and nothing is left of it either way.
        pad = payload.length > 0 ? payload[0] : 0;
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
    const block = this.block;
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
export function fixAuthority(socket: Socket, alreadyRead?: Buffer): Duplex {
  const fix = new AuthorityFix();
  if (alreadyRead?.length) fix.write(alreadyRead);
  socket.pipe(fix);
  const duplex = Duplex.from({ readable: fix, writable: socket });
  socket.on('error', (err) => duplex.destroy(err));
  duplex.on('close', () => socket.destroy());
  return duplex;
}

const TYPE_SETTINGS = 0x4;
const FLAG_ACK = 0x1;
/** A server preface that changes no setting: an empty SETTINGS frame. */
const EMPTY_SETTINGS = Buffer.from([0, 0, 0, TYPE_SETTINGS, 0, 0, 0, 0, 0]);
/** A client with no request by then has its connection go through the rewriting stream. */
const DECIDE_TIMEOUT_MS = 5_000;

/**
 * Hands a new connection to the HTTP/2 server (`inject`): the socket itself when its first
 * request's authority is one nghttp2 accepts, so that Node's native HTTP/2 reads it directly;
 * otherwise the rewriting stream (fixAuthority), which costs a JS stream hop per read and write.
 *
 * Deciding needs the first request's headers, and clients such as grpc-go send them only after
 * the server's preface; so this sends an empty SETTINGS frame first, reads until both the first
 * header block and the client's ACK of that SETTINGS have arrived, drops that ACK (the HTTP/2
 * server never sent those settings and would refuse an ACK it does not expect) and gives the
 * server everything else, from the client preface on.
 */
export function acceptConnection(socket: Socket, inject: (conn: Duplex) => void): void {
  let buffered: Buffer = Buffer.alloc(0);
  let offset = PREFACE_LENGTH;
  let ack: { start: number; end: number } | undefined;
  let block: Buffer[] | undefined;
  let blockDone = false;
  let decided = false;

  const cleanup = (): void => {
    decided = true;
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('error', onClose);
    socket.off('close', onClose);
    socket.pause();
  };
  const withoutAck = (): Buffer => (ack ? Buffer.concat([buffered.subarray(0, ack.start), buffered.subarray(ack.end)]) : buffered);
  const handOver = (passthrough: boolean): void => {
    const bytes = withoutAck();
    cleanup();
    if (passthrough) {
      if (bytes.length > 0) socket.unshift(bytes);
      inject(socket);
    } else {
      inject(fixAuthority(socket, bytes));
    }
  };
  const onClose = (): void => {
    if (decided) return;
    cleanup();
    socket.destroy();
  };
  const onData = (chunk: Buffer): void => {
    buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
    while (buffered.length >= offset + FRAME_HEADER) {
      const length = buffered.readUIntBE(offset, 3);
      const end = offset + FRAME_HEADER + length;
      if (buffered.length < end) return;
      const type = buffered[offset + 3];
      const flags = buffered[offset + 4];
      if (type === TYPE_SETTINGS && flags & FLAG_ACK && !ack) {
        ack = { start: offset, end };
      } else if (type === TYPE_HEADERS && !block) {
        let payload = buffered.subarray(offset + FRAME_HEADER, end);
        let pad = 0;
        if (flags & FLAG_PADDED) {
          // An empty PADDED frame is malformed: no pad, and nothing is left of it either way.
          pad = payload.length > 0 ? payload[0] : 0;
          payload = payload.subarray(1);
        }
        if (flags & FLAG_PRIORITY) payload = payload.subarray(5);
        block = [payload.subarray(0, payload.length - pad)];
        blockDone = (flags & FLAG_END_HEADERS) !== 0;
      } else if (type === TYPE_CONTINUATION && block && !blockDone) {
        block.push(buffered.subarray(offset + FRAME_HEADER, end));
        blockDone = (flags & FLAG_END_HEADERS) !== 0;
      }
      offset = end;
      // blockDone is only ever set with block.
      if (ack && blockDone && block) {
        handOver(firstAuthorityValid(Buffer.concat(block)));
        return;
      }
    }
  };
  const timer = setTimeout(() => {
    // No ACK: not an HTTP/2 client that follows the protocol.
    if (!ack) onClose();
    else handOver(false);
  }, DECIDE_TIMEOUT_MS);
  timer.unref();
  socket.on('data', onData);
  socket.once('error', onClose);
  socket.once('close', onClose);
  socket.write(EMPTY_SETTINGS);
}

/** Whether the first header block of a connection carries an authority nghttp2 accepts. */
function firstAuthorityValid(encoded: Buffer): boolean {
  const decoder = hpack.decompressor.create({ table: { maxSize: HEADER_TABLE_SIZE } });
  // Set by the decoder's error event, emitted synchronously inside write() or execute().
  const state = { failed: false };
  decoder.on('error', () => (state.failed = true));
  decoder.write(encoded);
  decoder.execute();
  if (state.failed) return false;
  for (let h = decoder.read(); h !== null; h = decoder.read()) {
    if (h.name === ':authority') return isValidAuthority(h.value);
  }
  return true;
}
