import { AlreadyExistsError } from '../errors';

/**
 * Names reserved before any work starts, so two kubelet retries of one create cannot make
 * twins (CRI-O's approach). A create still running for a name can be joined: the kubelet
 * retries a RunPodSandbox that timed out on its side, and should get the result, not a
 * "name is reserved" error for as long as the first attempt runs.
 */
export class NameRegistry<T> {
  private readonly owners = new Map<string, string>();
  private readonly inProgress = new Map<string, Promise<T>>();

  constructor(private readonly kind: string) {}

  /** Runs `create` under `name` for a new id; joins a create already running for that name. */
  async reserveAndCreate(name: string, id: string, create: () => Promise<T>): Promise<T> {
    const running = this.inProgress.get(name);
    if (running) return running;
    const owner = this.owners.get(name);
    if (owner !== undefined) {
      throw new AlreadyExistsError(`${this.kind} name ${JSON.stringify(name)} is reserved for ${owner}`);
    }
    this.owners.set(name, id);
    const work = create();
    this.inProgress.set(name, work);
    try {
      return await work;
    } catch (err) {
      this.owners.delete(name);
      throw err;
    } finally {
      this.inProgress.delete(name);
    }
  }

  /** Marks a name as taken by an object loaded at start. */
  claim(name: string, id: string): void {
    this.owners.set(name, id);
  }

  release(name: string, id: string): void {
    if (this.owners.get(name) === id) this.owners.delete(name);
  }
}
