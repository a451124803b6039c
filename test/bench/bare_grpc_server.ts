// A grpc-js server that answers Version and nothing else, in a process of its own: the floor
// under any CRI call a Node.js daemon on @grpc/grpc-js can answer (bench floor).
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { loadCri } from '../../src/proto';

const socket = process.argv[2];
if (!socket) {
  process.stderr.write('usage: bare_grpc_server.js SOCKET\n');
  process.exit(2);
}
fs.rmSync(socket, { force: true });
const server = new grpc.Server({ 'grpc.enable_channelz': 0 });
server.addService(loadCri().runtime.v1.RuntimeService.service, {
  Version: (_call: unknown, callback: grpc.sendUnaryData<object>) => {
    callback(null, { version: '0.1.0', runtime_name: 'bare', runtime_version: '0', runtime_api_version: 'v1' });
  },
});
server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) {
    process.stderr.write(`bind ${socket}: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write('ready\n');
});
process.on('SIGTERM', () => {
  server.forceShutdown();
  fs.rmSync(socket, { force: true });
  process.exit(0);
});
