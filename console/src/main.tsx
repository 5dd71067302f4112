import { render } from "preact";
import { App } from "./app.js";
import { loadConfig, startSession } from "./auth.js";
import "./style.css";

/** Signs the operator in (or completes the sign-in that just came back), then shows the console. */
async function main(): Promise<void> {
  const root = document.getElementById("app")!;
  // The page's "Loading" line goes; Preact renders into an empty element.
  root.textContent = "";
  try {
    const config = await loadConfig();
    if (!config.configured) {
      render(
        <main class="center">
          <h1>Sign-in is not configured</h1>
          <p>Set OPERATOR_CONSOLE_CLIENT_ID (infra/scripts/register-app.sh creates the console's registration).</p>
        </main>,
        root,
      );
      return;
    }
    const { session, signIn } = await startSession(config);
    if (!session) {
      render(
        <main class="center">
          <h1>MSSP Defender collector</h1>
          <p>Sign in with your account in the MSSP's Microsoft Entra ID tenant.</p>
          <button type="button" class="primary" id="sign-in" onClick={() => void signIn()}>
            Sign in
          </button>
        </main>,
        root,
      );
      return;
    }
    render(<App session={session} />, root);
  } catch (err) {
    render(
      <main class="center">
        <h1>The console could not start</h1>
        <p class="error">{err instanceof Error ? err.message : String(err)}</p>
        <p>
          <a href="./">Try again</a>
        </p>
      </main>,
      root,
    );
  }
}

void main();
