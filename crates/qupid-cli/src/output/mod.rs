//! What the commands print: aligned tables and times for people, stable JSON for scripts.

pub(crate) mod json;
pub(crate) mod table;
pub(crate) mod time;

pub(crate) use table::{escape, escape_short, key_cell, shell_quote, Align, Table};
