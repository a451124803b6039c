import { DEFAULT_CONFIG_FILE } from '../config';
import { OPTIONS, optionHelp } from '../config_options';

/** `tscri --help`: every option of the table, with its flag, config key and default. */
export function helpText(): string {
  return [
    'Usage: tscri [command] [options]',
    '',
    'A Kubernetes container runtime (CRI runtime.v1) over runc/crun, conmon, CNI and overlayfs.',
    '',
    'Commands:',
    '  (none)    serve the CRI on --listen until SIGTERM',
    '  config    print the effective configuration (defaults, then the file, then flags) as TOML',
    '  check     probe this host for each node feature; exit 1 when no pod could run here',
    '',
    'Options (each also a key of the config file; flags override the file):',
    '  --config FILE',
    `      TOML configuration file; default: ${DEFAULT_CONFIG_FILE} when it exists.`,
    ...OPTIONS.flatMap((o) => optionHelp(o)),
    '  -h, --help       print this help',
    '  -v, --version    print the version',
    '',
  ].join('\n');
}
