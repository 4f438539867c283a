/** A small typed event emitter: `on` returns the function that removes the listener. */
export class Emitter<E extends { [K in keyof E]: (...args: any[]) => void }> {
  #listeners = new Map<keyof E, Set<E[keyof E]>>();

  on<K extends keyof E>(event: K, listener: E[K]): () => void {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => this.off(event, listener);
  }

  once<K extends keyof E>(event: K, listener: E[K]): () => void {
    const off = this.on(event, ((...args: Parameters<E[K]>) => {
      off();
      listener(...args);
    }) as E[K]);
    return off;
  }

  off<K extends keyof E>(event: K, listener: E[K]): void {
    this.#listeners.get(event)?.delete(listener);
  }

  /** Call every listener of `event`; a listener that throws does not stop the others. */
  emit<K extends keyof E>(event: K, ...args: Parameters<E[K]>): void {
    for (const l of [...(this.#listeners.get(event) ?? [])]) {
      try {
        (l as (...a: Parameters<E[K]>) => void)(...args);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
