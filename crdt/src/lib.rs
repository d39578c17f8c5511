//! placeholder during bootstrap: crate docs come with the modules.
pub mod collection;
pub mod query;
pub mod record;
