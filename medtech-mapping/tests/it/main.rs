//! Integration tests: golden cases from the Microsoft Learn MedTech docs and the CLI.

mod golden;
