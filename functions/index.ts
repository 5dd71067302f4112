import { app } from "@azure/functions";

/**
 * The app's setup, loaded with the function files through package.json's main glob (the
 * worker applies setup once every entry file has loaded). HTTP streaming lets
 * GET /api/tenants/{id}/export send a tenant's alerts while it reads them, instead of
 * buffering the whole answer.
 */
app.setup({ enableHttpStream: true });
