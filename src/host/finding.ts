/** One node feature as `tscri check` and the daemon's start-up summary report it. */
export interface Finding {
  /** Short, stable name: "pods", "cgroups", "runtime runc"… */
  feature: string;
  ok: boolean;
  /** No pod can run on this host while this fails. */
  essential: boolean;
  /** What was seen (versions, paths), or why it does not work. */
  detail: string;
}

export function found(feature: string, detail: string, essential = false): Finding {
  return { feature, ok: true, essential, detail };
}

export function failed(feature: string, detail: string, essential = false): Finding {
  return { feature, ok: false, essential, detail };
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
