// implement() is the one path every CRI call takes: handlers that answer at once and handlers
// that return promises, throws and rejections, missing methods, and clients that go away.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { NotFoundError } from '../../src/errors';
import type { RuntimeServiceHandlers } from '../../src/gen/runtime/v1/RuntimeService';
import { Metrics } from '../../src/metrics';
import { loadCri } from '../../src/proto';
import { callContext, implement, passEncoded } from '../../src/server/grpc';
import { connectCri, expectCriError, type CriClient } from '../helpers/cri';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'grpc-implement-'));
const socket = path.join(dir, 'cri.sock');
const server = new grpc.Server();
const metrics = new Metrics();
let cri: CriClient;
/** What the slow handler saw: set when its signal fired. */
let aborted: ((reason: unknown) => void) | undefined;
const abortedSeen = new Promise<unknown>((resolve) => (aborted = resolve));
let slowStarted: (() => void) | undefined;
const slowStartedSeen = new Promise<void>((resolve) => (slowStarted = resolve));

before(async () => {
  const def = loadCri().runtime.v1.RuntimeService.service;
  server.addService(
    passEncoded(def),
    implement<RuntimeServiceHandlers>(
      'runtime.v1.RuntimeService',
      def,
      {
        // Answers at once.
        Version: (req) => ({ version: req.version, runtime_name: 'sync' }),
        // Throws at once.
        ContainerStatus: (req) => {
          throw new NotFoundError(`container ${req.container_id} not found`);
        },
        // Rejects later.
        PodSandboxStatus: async (req) => {
          await new Promise((r) => setImmediate(r));
          throw new NotFoundError(`pod ${req.pod_sandbox_id} not found`);
        },
        // Waits until its client goes away.
        ExecSync: (_req, ctx) => {
          slowStarted?.();
          return new Promise((_resolve, reject) => {
            ctx.signal.addEventListener('abort', () => {
              aborted?.(ctx.signal.reason);
              reject(ctx.signal.reason as Error);
            });
          });
        },
      },
      pino({ level: 'silent' }),
      metrics,
    ),
  );
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
  );
  cri = connectCri(socket);
});

after(() => {
  cri.close();
  server.forceShutdown();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a handler that answers at once is answered, and counted as OK', async () => {
  const res = await cri.runtime.Version({ version: 'v1' });
  assert.equal(res.runtime_name, 'sync');
  assert.equal(res.version, 'v1');
  const counted = (await metrics.registry.getSingleMetric('tscri_grpc_requests_total')?.get())?.values ?? [];
  assert.ok(
    counted.some((v) => v.labels.method === 'runtime.v1.RuntimeService/Version' && v.labels.code === 'OK' && v.value >= 1),
    `Version counted as OK: ${JSON.stringify(counted)}`,
  );
});

test('a handler that throws at once gives its status and message', async () => {
  const err = await expectCriError('ContainerStatus', () => cri.runtime.ContainerStatus({ container_id: 'c-missing', verbose: false }));
  assert.equal(err.code, grpc.status.NOT_FOUND);
  assert.match(err.details, /container c-missing not found/);
});

test('a handler that rejects later gives its status and message', async () => {
  const err = await expectCriError('PodSandboxStatus', () => cri.runtime.PodSandboxStatus({ pod_sandbox_id: 'p-missing', verbose: false }));
  assert.equal(err.code, grpc.status.NOT_FOUND);
  assert.match(err.details, /pod p-missing not found/);
});

test('a method without a handler is UNIMPLEMENTED, with its name', async () => {
  const err = await expectCriError('ListImages', () => cri.runtime.ListPodSandbox({ filter: {} }));
  assert.equal(err.code, grpc.status.UNIMPLEMENTED);
  assert.match(err.details, /runtime\.v1\.RuntimeService\/ListPodSandbox is not implemented/);
});

test('a client that cancels aborts the signal of the handler it was waiting for', async () => {
  let clientErr: grpc.ServiceError | null = null;
  const clientDone = new Promise<void>((resolve) => {
    const call = cri.runtimeClient.ExecSync({ container_id: 'c1', cmd: ['sleep', '1'], timeout: '0' }, { deadline: Date.now() + 60_000 }, (err) => {
      clientErr = err;
      resolve();
    });
    void slowStartedSeen.then(() => call.cancel());
  });
  const reason = await abortedSeen;
  assert.match(String(reason), /runtime\.v1\.RuntimeService\/ExecSync: cancelled by the client/);
  await clientDone;
  assert.equal((clientErr as grpc.ServiceError | null)?.code, grpc.status.CANCELLED);
});

test('a signal first asked for after the client gave up is already aborted; one asked for before the answer is not', () => {
  const cancelledCall = Object.assign(new EventEmitter(), { cancelled: false });
  const late = callContext(cancelledCall as unknown as grpc.ServerUnaryCall<unknown, unknown>, 'svc/M', pino({ level: 'silent' }));
  cancelledCall.cancelled = true;
  cancelledCall.emit('cancelled', 'cancelled');
  assert.equal(late.signal.aborted, true);
  assert.match(String(late.signal.reason), /svc\/M: cancelled by the client/);

  // grpc-js reports every call as cancelled once its status is sent: not a cancellation then.
  const answeredCall = Object.assign(new EventEmitter(), { cancelled: false });
  const answered = callContext(answeredCall as unknown as grpc.ServerUnaryCall<unknown, unknown>, 'svc/M', pino({ level: 'silent' }));
  const signal = answered.signal;
  answered.finished();
  answeredCall.cancelled = true;
  answeredCall.emit('cancelled', 'cancelled');
  assert.equal(signal.aborted, false);

  // Nor when the signal is first asked for after the answer, the call already marked cancelled.
  const askedLate = callContext(answeredCall as unknown as grpc.ServerUnaryCall<unknown, unknown>, 'svc/M', pino({ level: 'silent' }));
  askedLate.finished();
  assert.equal(askedLate.signal.aborted, false);
});
