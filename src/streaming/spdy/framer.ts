// SPDY/3.1 frames, as the Kubernetes streaming clients speak them (spdystream underneath
// client-go and crictl). Layout from the SPDY/3.1 draft, section 2.2:
//
//   control: |1| version(15) | type(16) | flags(8) | length(24) | payload
//   data:    |0| stream id(31)          | flags(8) | length(24) | payload
//
// Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are zlib streams primed with the draft's
// dictionary (section 2.6.10.1), and each direction of a session keeps ONE compression context
// for its whole life: a block is compressed with a sync flush, never with a fresh stream, so a
// block can only be decoded by the context that decoded every earlier block of that direction.

import zlib from 'node:zlib';

export const SPDY_VERSION = 3;

export const FrameType = {
  SYN_STREAM: 1,
  SYN_REPLY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PING: 6,
  GOAWAY: 7,
  HEADERS: 8,
  WINDOW_UPDATE: 9,
} as const;

export const FLAG_FIN = 0x01;
export const FLAG_UNIDIRECTIONAL = 0x02;

/** RST_STREAM status codes (draft section 2.4.2). */
export const RstStatus = {
  PROTOCOL_ERROR: 1,
  INVALID_STREAM: 2,
  REFUSED_STREAM: 3,
  UNSUPPORTED_VERSION: 4,
  CANCEL: 5,
  INTERNAL_ERROR: 6,
  FLOW_CONTROL_ERROR: 7,
  STREAM_IN_USE: 8,
  STREAM_ALREADY_CLOSED: 9,
} as const;

/** Lowercase names; several values of one name are joined with NUL, as on the wire. */
export type SpdyHeaders = Record<string, string>;

export type Frame =
  | { type: 'data'; streamId: number; flags: number; data: Buffer }
  | { type: 'syn_stream'; streamId: number; associatedId: number; priority: number; flags: number; headers: SpdyHeaders }
  | { type: 'syn_reply'; streamId: number; flags: number; headers: SpdyHeaders }
  | { type: 'rst_stream'; streamId: number; status: number }
  | { type: 'settings'; flags: number; entries: Array<{ flags: number; id: number; value: number }> }
  | { type: 'ping'; id: number }
  | { type: 'goaway'; lastGoodStreamId: number; status: number }
  | { type: 'headers'; streamId: number; flags: number; headers: SpdyHeaders }
  | { type: 'window_update'; streamId: number; delta: number }
  | { type: 'unknown'; frameType: number; flags: number; payload: Buffer };

/** A frame cut from the byte stream, header block still compressed. */
export interface RawFrame {
  control: boolean;
  /** Control frames: the type; data frames: the stream id. */
  typeOrStream: number;
  version: number;
  flags: number;
  payload: Buffer;
}

/** SPDY frames carry 24-bit lengths; a peer announcing more than this is cut off. */
const MAX_FRAME_PAYLOAD = (1 << 24) - 1;
/** Bound on a decoded header block: clients send a handful of short headers. */
const MAX_HEADER_BLOCK = 256 * 1024;

// The draft's dictionary is a run of length-prefixed header names and common values, then a
// tail of status lines, dates, media types and charsets. Spelled out as data, not bytes, so it
// can be read; the unit test pins its zlib dictionary id.
const DICTIONARY_WORDS = [
  'options',
  'head',
  'post',
  'put',
  'delete',
  'trace',
  'accept',
  'accept-charset',
  'accept-encoding',
  'accept-language',
  'accept-ranges',
  'age',
  'allow',
  'authorization',
  'cache-control',
  'connection',
  'content-base',
  'content-encoding',
  'content-language',
  'content-length',
  'content-location',
  'content-md5',
  'content-range',
  'content-type',
  'date',
  'etag',
  'expect',
  'expires',
  'from',
  'host',
  'if-match',
  'if-modified-since',
  'if-none-match',
  'if-range',
  'if-unmodified-since',
  'last-modified',
  'location',
  'max-forwards',
  'pragma',
  'proxy-authenticate',
  'proxy-authorization',
  'range',
  'referer',
  'retry-after',
  'server',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'user-agent',
  'vary',
  'via',
  'warning',
  'www-authenticate',
  'method',
  'get',
  'status',
  '200 OK',
  'version',
  'HTTP/1.1',
  'url',
  'public',
  'set-cookie',
  'keep-alive',
  'origin',
];
const DICTIONARY_TAIL = [
  '100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505',
  '203 Non-Authoritative Information',
  '204 No Content',
  '301 Moved Permanently',
  '400 Bad Request',
  '401 Unauthorized',
  '403 Forbidden',
  '404 Not Found',
  '500 Internal Server Error',
  '501 Not Implemented',
  '503 Service Unavailable',
  'Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT',
  'chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,',
  'text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.',
].join('');

export const HEADER_DICTIONARY: Buffer = (() => {
  const parts: Buffer[] = [];
  for (const w of DICTIONARY_WORDS) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(w.length, 0);
    parts.push(len, Buffer.from(w, 'latin1'));
  }
  parts.push(Buffer.from(DICTIONARY_TAIL, 'latin1'));
  return Buffer.concat(parts);
})();

export class SpdyProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SpdyProtocolError';
  }
}

/**
 * Cuts complete frames out of a byte stream; keeps the remainder for the next push. Chunks are
 * queued, not concatenated on every push, and a frame that lies within one chunk is a view of
 * it: port-forward moves megabytes through here, and each copy costs CPU.
 */
export class FrameSplitter {
  private readonly chunks: Buffer[] = [];
  private size = 0;

  push(chunk: Buffer): RawFrame[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.size += chunk.length;
    }
    const out: RawFrame[] = [];
    while (this.size >= 8) {
      const head = this.peek(8);
      const w0 = head.readUInt32BE(0);
      const w1 = head.readUInt32BE(4);
      const length = w1 & 0xffffff;
      if (length > MAX_FRAME_PAYLOAD) throw new SpdyProtocolError(`frame of ${length} bytes`);
      if (this.size < 8 + length) break;
      const frame = this.take(8 + length);
      const control = (w0 & 0x80000000) !== 0;
      out.push({
        control,
        typeOrStream: control ? w0 & 0xffff : w0 & 0x7fffffff,
        version: control ? (w0 >>> 16) & 0x7fff : 0,
        flags: w1 >>> 24,
        // A view: socket chunks are never reused by Node, so the bytes stay as they are.
        payload: frame.subarray(8),
      });
    }
    return out;
  }

  /** The first `n` queued bytes, without consuming them. */
  private peek(n: number): Buffer {
    const first = this.chunks[0];
    return first.length >= n ? first : Buffer.concat(this.chunks, n);
  }

  /** Consumes the first `n` queued bytes: a view when they lie in one chunk, else a copy. */
  private take(n: number): Buffer {
    const first = this.chunks[0];
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const c = this.chunks[0];
        const part = Math.min(c.length, n - filled);
        c.copy(out, filled, 0, part);
        filled += part;
        if (part === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(part);
      }
    }
    this.size -= n;
    return out;
  }
}

function encodeHeaderBlock(headers: SpdyHeaders): Buffer {
  const entries = Object.entries(headers);
  const parts: Buffer[] = [];
  const count = Buffer.alloc(4);
  count.writeUInt32BE(entries.length, 0);
  parts.push(count);
  for (const [name, value] of entries) {
    for (const s of [name.toLowerCase(), value]) {
      const b = Buffer.from(s, 'utf8');
      const len = Buffer.alloc(4);
      len.writeUInt32BE(b.length, 0);
      parts.push(len, b);
    }
  }
  return Buffer.concat(parts);
}

function decodeHeaderBlock(block: Buffer): SpdyHeaders {
  const headers: SpdyHeaders = {};
  const need = (off: number, n: number): void => {
    if (off + n > block.length) throw new SpdyProtocolError('truncated header block');
  };
  need(0, 4);
  const count = block.readUInt32BE(0);
  let off = 4;
  for (let i = 0; i < count; i++) {
    need(off, 4);
    const nl = block.readUInt32BE(off);
    off += 4;
    need(off, nl);
    const name = block.toString('utf8', off, off + nl).toLowerCase();
    off += nl;
    need(off, 4);
    const vl = block.readUInt32BE(off);
    off += 4;
    need(off, vl);
    const value = block.toString('utf8', off, off + vl);
    off += vl;
    headers[name] = name in headers ? `${headers[name]}\0${value}` : value;
  }
  return headers;
}

/**
 * One direction's zlib context. Calls are serialised: a header block must leave (or be read)
 * in frame order, and zlib's stream interface is asynchronous.
 */
class HeaderZlib {
  private chain: Promise<unknown> = Promise.resolve();
  private readonly z: zlib.Deflate | zlib.Inflate;

  constructor(mode: 'deflate' | 'inflate') {
    this.z =
      mode === 'deflate'
        ? zlib.createDeflate({ dictionary: HEADER_DICTIONARY })
        : zlib.createInflate({ dictionary: HEADER_DICTIONARY, maxOutputLength: MAX_HEADER_BLOCK });
    this.z.on('error', () => undefined);
  }

  run(input: Buffer): Promise<Buffer> {
    const next = this.chain.then(
      () =>
        new Promise<Buffer>((resolve, reject) => {
          const onError = (err: Error): void => reject(new SpdyProtocolError(`header block: ${err.message}`));
          this.z.once('error', onError);
          this.z.write(input);
          this.z.flush(zlib.constants.Z_SYNC_FLUSH, () => {
            this.z.off('error', onError);
            // Output of this flush is buffered in the (paused) readable side by now.
            const parts: Buffer[] = [];
            let chunk: Buffer | null;
            while ((chunk = this.z.read() as Buffer | null) !== null) parts.push(chunk);
            resolve(Buffer.concat(parts));
          });
        }),
    );
    this.chain = next.catch(() => undefined);
    return next;
  }

  close(): void {
    this.z.close();
  }
}

/** Encodes and decodes the frames of one session; owns both header compression contexts. */
export class SpdyFramer {
  private readonly deflate = new HeaderZlib('deflate');
  private readonly inflate = new HeaderZlib('inflate');

  /** Control frames are serialised with header compression; resolve in call order. */
  async encode(frame: Frame): Promise<Buffer> {
    switch (frame.type) {
      case 'data':
        return encodeData(frame.streamId, frame.flags, frame.data);
      case 'syn_stream': {
        const block = await this.deflate.run(encodeHeaderBlock(frame.headers));
        const p = Buffer.alloc(10);
        p.writeUInt32BE(frame.streamId & 0x7fffffff, 0);
        p.writeUInt32BE(frame.associatedId & 0x7fffffff, 4);
        p.writeUInt8((frame.priority & 0x7) << 5, 8);
        return control(FrameType.SYN_STREAM, frame.flags, Buffer.concat([p, block]));
      }
      case 'syn_reply':
      case 'headers': {
        const block = await this.deflate.run(encodeHeaderBlock(frame.headers));
        const p = Buffer.alloc(4);
        p.writeUInt32BE(frame.streamId & 0x7fffffff, 0);
        return control(frame.type === 'syn_reply' ? FrameType.SYN_REPLY : FrameType.HEADERS, frame.flags, Buffer.concat([p, block]));
      }
      case 'rst_stream':
        return control(FrameType.RST_STREAM, 0, u32s(frame.streamId & 0x7fffffff, frame.status));
      case 'settings': {
        const p = Buffer.alloc(4 + 8 * frame.entries.length);
        p.writeUInt32BE(frame.entries.length, 0);
        frame.entries.forEach((e, i) => {
          p.writeUInt32BE((((e.flags & 0xff) << 24) >>> 0) | (e.id & 0xffffff), 4 + 8 * i);
          p.writeUInt32BE(e.value >>> 0, 8 + 8 * i);
        });
        return control(FrameType.SETTINGS, frame.flags, p);
      }
      case 'ping':
        return control(FrameType.PING, 0, u32s(frame.id >>> 0));
      case 'goaway':
        return control(FrameType.GOAWAY, 0, u32s(frame.lastGoodStreamId & 0x7fffffff, frame.status));
      case 'window_update':
        return control(FrameType.WINDOW_UPDATE, 0, u32s(frame.streamId & 0x7fffffff, frame.delta & 0x7fffffff));
      case 'unknown':
        return control(frame.frameType, frame.flags, frame.payload);
    }
  }

  /** Decodes a raw frame; header blocks go through this session's inflate context in order. */
  async decode(raw: RawFrame): Promise<Frame> {
    if (!raw.control) return { type: 'data', streamId: raw.typeOrStream, flags: raw.flags, data: raw.payload };
    if (raw.version !== SPDY_VERSION) throw new SpdyProtocolError(`unsupported SPDY version ${raw.version}`);
    const p = raw.payload;
    const need = (n: number): void => {
      if (p.length < n) throw new SpdyProtocolError(`control frame type ${raw.typeOrStream}: ${p.length} bytes, need ${n}`);
    };
    switch (raw.typeOrStream) {
      case FrameType.SYN_STREAM: {
        need(10);
        const headers = decodeHeaderBlock(await this.inflate.run(p.subarray(10)));
        return {
          type: 'syn_stream',
          streamId: p.readUInt32BE(0) & 0x7fffffff,
          associatedId: p.readUInt32BE(4) & 0x7fffffff,
          priority: p.readUInt8(8) >>> 5,
          flags: raw.flags,
          headers,
        };
      }
      case FrameType.SYN_REPLY:
      case FrameType.HEADERS: {
        need(4);
        const headers = decodeHeaderBlock(await this.inflate.run(p.subarray(4)));
        const streamId = p.readUInt32BE(0) & 0x7fffffff;
        return raw.typeOrStream === FrameType.SYN_REPLY
          ? { type: 'syn_reply', streamId, flags: raw.flags, headers }
          : { type: 'headers', streamId, flags: raw.flags, headers };
      }
      case FrameType.RST_STREAM:
        need(8);
        return { type: 'rst_stream', streamId: p.readUInt32BE(0) & 0x7fffffff, status: p.readUInt32BE(4) };
      case FrameType.SETTINGS: {
        need(4);
        const n = p.readUInt32BE(0);
        need(4 + 8 * n);
        const entries = [];
        for (let i = 0; i < n; i++) {
          const w = p.readUInt32BE(4 + 8 * i);
          entries.push({ flags: w >>> 24, id: w & 0xffffff, value: p.readUInt32BE(8 + 8 * i) });
        }
        return { type: 'settings', flags: raw.flags, entries };
      }
      case FrameType.PING:
        need(4);
        return { type: 'ping', id: p.readUInt32BE(0) };
      case FrameType.GOAWAY:
        need(4);
        return { type: 'goaway', lastGoodStreamId: p.readUInt32BE(0) & 0x7fffffff, status: p.length >= 8 ? p.readUInt32BE(4) : 0 };
      case FrameType.WINDOW_UPDATE:
        need(8);
        return { type: 'window_update', streamId: p.readUInt32BE(0) & 0x7fffffff, delta: p.readUInt32BE(4) & 0x7fffffff };
      default:
        return { type: 'unknown', frameType: raw.typeOrStream, flags: raw.flags, payload: p };
    }
  }

  close(): void {
    this.deflate.close();
    this.inflate.close();
  }
}

export function encodeData(streamId: number, flags: number, data: Buffer): Buffer {
  if (data.length > MAX_FRAME_PAYLOAD) throw new SpdyProtocolError(`data frame of ${data.length} bytes`);
  const h = Buffer.alloc(8);
  h.writeUInt32BE(streamId & 0x7fffffff, 0);
  h.writeUInt32BE((((flags & 0xff) << 24) | data.length) >>> 0, 4);
  return Buffer.concat([h, data]);
}

function control(type: number, flags: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32BE((0x80000000 | (SPDY_VERSION << 16) | type) >>> 0, 0);
  h.writeUInt32BE((((flags & 0xff) << 24) | payload.length) >>> 0, 4);
  return Buffer.concat([h, payload]);
}

function u32s(...values: number[]): Buffer {
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeUInt32BE(v >>> 0, 4 * i));
  return b;
}
