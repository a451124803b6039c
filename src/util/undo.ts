/**
 * Cleanup on the error path: each creation step registers its undo; a failure halfway
 * undoes what was done, in reverse order. Undo failures are logged, never thrown over the
 * original error.
 */
export class UndoStack {
  private readonly steps: { what: string; fn: () => Promise<void> | void }[] = [];

  push(what: string, fn: () => Promise<void> | void): void {
    this.steps.push({ what, fn });
  }

  async run(onError: (what: string, err: unknown) => void): Promise<void> {
    for (let step = this.steps.pop(); step !== undefined; step = this.steps.pop()) {
      const { what, fn } = step;
      try {
        await fn();
      } catch (err) {
        onError(what, err);
      }
    }
  }

  clear(): void {
    this.steps.length = 0;
  }
}
