/**
 * ESM entry point of @telemetryd/client: re-exports the CommonJS implementation.
 * @module @telemetryd/client
 */
import cjs from './index.cjs';

/** @see {@link cjs.createClient} */
export const {
  DEFAULT_TIMEOUT_MS,
  FINAL_CODES,
  LIMITS,
  MAX_DROPS_BYTES,
  MAX_LINE_LEN,
  MAX_SPOOL_FILES,
  PROTOCOL_VERSION,
  createClient,
  decodeResponse,
  genericPrompt,
  howToChange,
  parseConsentFile,
  parseKV,
  renderConsentFile,
  requests,
  resolveConsent,
  resolvePaths,
  setEntry,
  socketHash,
  spoolDirFor,
  spoolDropsFile,
  uuidv7,
} = cjs;
