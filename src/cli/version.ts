import { RUNTIME_NAME, RUNTIME_VERSION } from '../version';

/** `tscri --version`: ours, the CRI API served, and what this build runs on. */
export function versionText(): string {
  return [`${RUNTIME_NAME} ${RUNTIME_VERSION}`, 'CRI API: runtime.v1', `node: ${process.version} ${process.platform}/${process.arch}`, ''].join('\n');
}
