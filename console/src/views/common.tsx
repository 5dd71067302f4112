import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useState } from "preact/hooks";
import { ApiProblem } from "../api.js";

/** Loads `load()` once (and again on reload()), with its error in words. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[] = []): { data?: T; error?: string; loading: boolean; reload: () => void } {
  const [state, setState] = useState<{ data?: T; error?: string; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  // The caller names what the load depends on (deps); `load` itself changes on every render.
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => live && setState({ data, loading: false }),
      (err: unknown) => live && setState({ error: problem(err), loading: false }),
    );
    return () => {
      live = false;
    };
  }, [tick, ...deps]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

export function problem(err: unknown): string {
  if (err instanceof ApiProblem) return `${err.message} (${err.code})`;
  return err instanceof Error ? err.message : String(err);
}

export function ErrorLine({ error }: { error?: string | undefined }) {
  return error ? (
    <p class="error" role="alert">
      {error}
    </p>
  ) : null;
}

export function Section({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section>
      <div class="section-head">
        <h2>{title}</h2>
        {actions}
      </div>
      {children}
    </section>
  );
}

/** Loads a view's data again (a Section's action). */
export function RefreshButton({ reload, loading }: { reload: () => void; loading: boolean }) {
  return (
    <button type="button" onClick={reload} disabled={loading}>
      Refresh
    </button>
  );
}

/** A user by sign-in name; an application (automation) by its app ID. */
export function actorName(actor: { type: string; oid: string; upn?: string; appId?: string }): string {
  if (actor.type === "user") return actor.upn ?? actor.oid;
  return `app ${actor.appId ?? actor.oid}`;
}
