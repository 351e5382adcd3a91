/**
 * Gathers the store writes of one turn of the event loop into one
 * transaction, and answers them once it is on disk. Files finishing together
 * share one commit, and commits that end while the disk is flushing share
 * the next flush.
 *
 * @module
 */

interface Job {
  readonly work: () => unknown;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/** How a {@linkcode CommitGroup} runs a batch: all of it in one transaction, each job isolated. */
export interface GroupRunner {
  /** Runs `body` in one transaction and commits it; throws if the commit fails. */
  transaction(body: () => void): void;
  /** Runs one job so that its failure undoes only its own writes (a savepoint). */
  isolated<T>(work: () => T): T;
  /** Resolves once every transaction committed before the call is on disk. */
  durable(): Promise<void>;
}

/** Queues writes and commits them together at the next timer turn. */
export class CommitGroup {
  readonly #runner: GroupRunner;
  #pending: Job[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(runner: GroupRunner) {
    this.#runner = runner;
  }

  /**
   * Runs `work` with the other work queued before the next timer turn, and
   * resolves with its result once their transaction is committed and on disk.
   * A `work` that throws rejects alone; a failed commit rejects every job.
   */
  add<T>(work: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#pending.push({ work, resolve: resolve as (value: unknown) => void, reject });
      this.#timer ??= setTimeout(() => this.flush(), 0);
    });
  }

  /** Commits what is queued now (before the store closes). */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const jobs = this.#pending;
    this.#pending = [];
    if (jobs.length === 0) return;
    const outcomes: ({ value: unknown } | { error: unknown })[] = [];
    try {
      this.#runner.transaction(() => {
        for (const job of jobs) {
          try {
            outcomes.push({ value: this.#runner.isolated(job.work) });
          } catch (error) {
            outcomes.push({ error });
          }
        }
      });
    } catch (error) {
      for (const job of jobs) job.reject(error);
      return;
    }
    const answer = () =>
      jobs.forEach((job, i) => {
        const outcome = outcomes[i];
        if ("error" in outcome) job.reject(outcome.error);
        else job.resolve(outcome.value);
      });
    this.#runner.durable().then(answer, (error) => {
      for (const job of jobs) job.reject(error);
    });
  }
}
