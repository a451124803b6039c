import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType } from './gen/api';

/** proto/api.proto, from the compiled dist/src/proto.js or a test beside it. */
export const PROTO_PATH = path.join(__dirname, '..', '..', 'proto', 'api.proto');

/**
 * The CRI package. int64 values stay strings (nanosecond timestamps overflow a double), enums
 * are their names, and field names keep the proto's snake_case.
 */
export function loadCri(): ProtoGrpcType {
  const def = protoLoader.loadSync(PROTO_PATH, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  return grpc.loadPackageDefinition(def) as unknown as ProtoGrpcType;
}
