//! sluice: a traffic controller for OpenAI-compatible LLM APIs.
//!
//! This crate will hold the engine shared by every face (client library, gateway, batch runner):
//! see `DESIGN.md` in the shared handbook for the stack. It is built up issue by issue; today it
//! only names the crate so the workspace layout is in place.

#![forbid(unsafe_code)]
