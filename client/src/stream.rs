//! Streaming: many acknowledged emits in flight on one connection
//! (issue #18). Filled in by the pipelining work.
