import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** An answer of the MLOps REST API that is an error: its status and the server's message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly reason: string
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The Jupyter server answered, but not with the MLOps API: the server extension is not loaded. */
export class ExtensionMissingError extends ApiError {
  constructor(status: number) {
    super(
      status,
      'The mlops-magics server extension is not running in this Jupyter server. ' +
        'Install mlops-magics in the environment that runs JupyterLab ' +
        '(pip install mlops-magics), check that `jupyter server extension list` shows ' +
        'mlops_magics.server_extension enabled, then restart JupyterLab.',
      'ExtensionMissing'
    );
    this.name = 'ExtensionMissingError';
  }
}

/**
 * An endpoint of the API for one registry: `path` with `registry=HOME` (and `params`) as its query. Every
 * route reads the registry it is given (none: the server's default).
 */
export function endpoint(path: string, registry: string | null, params: Record<string, string> = {}): string {
  const query = new URLSearchParams(params);
  if (registry !== null) {
    query.set('registry', registry);
  }
  const text = query.toString();
  return text.length > 0 ? `${path}?${text}` : path;
}

/** The last answer to each GET, by URL, with its ETag: a 304 (nothing changed) reuses it. */
const answers = new Map<string, { etag: string; body: unknown }>();

/**
 * Call the MLOps REST API of the Jupyter server (`{base}/mlops/api/{endpoint}`) and return its JSON.
 * A GET sends the ETag of its last answer; when the server says nothing changed (304), that same answer
 * (the same object) is returned.
 *
 * @throws {ExtensionMissingError} the server has no such API (the server extension is not loaded).
 * @throws {ApiError} the API answered with an error; its message says what was wrong.
 * @throws {ServerConnection.NetworkError} the server could not be reached.
 */
export async function requestAPI<T>(
  endpoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'mlops', 'api', endpoint);
  const isGet = (init.method ?? 'GET').toUpperCase() === 'GET';
  const last = isGet ? answers.get(url) : undefined;
  const headers = new Headers(init.headers);
  if (last !== undefined) {
    headers.set('If-None-Match', last.etag);
  }
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, { ...init, headers }, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  if (response.status === 304 && last !== undefined) {
    return last.body as T;
  }
  const text = await response.text();
  let body: unknown = undefined;
  try {
    body = text.length > 0 ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  if (response.ok) {
    if (body === undefined) {
      throw new ApiError(response.status, `The MLOps API sent no JSON for ${endpoint}.`, 'BadAnswer');
    }
    const etag = response.headers.get('ETag');
    if (isGet && etag !== null) {
      answers.set(url, { etag, body });
    }
    return body as T;
  }
  const error = body as { message?: string; reason?: string } | undefined;
  if (error === undefined || typeof error.message !== 'string') {
    // Our handlers always answer errors as {"message", "reason"}: anything else is Jupyter's own page.
    if (response.status === 404) {
      throw new ExtensionMissingError(response.status);
    }
    throw new ApiError(response.status, `${response.status} ${response.statusText}`, 'HTTPError');
  }
  throw new ApiError(response.status, error.message, error.reason ?? 'Error');
}
