//! Python stacks: frames, code objects, line tables, strings (per version).
