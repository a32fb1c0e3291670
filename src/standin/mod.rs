//! The stand-in pipeline manager.
