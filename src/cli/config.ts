import type { Config } from '../config';
import { configToToml } from '../config_options';

/** `tscri config`: the configuration in effect, as a file that reads back to the same. */
export function configText(cfg: Config): string {
  return `# tscri configuration in effect: defaults, then the config file, then flags.\n${configToToml(cfg)}`;
}
