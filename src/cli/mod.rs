//! The subcommands a person runs against a cluster beside the operator: `rampart plan` (what
//! applying a profile would do) and `rampart status` (a profile's status, readable). Both
//! call the API and only read.

pub mod plan;
pub mod status;
