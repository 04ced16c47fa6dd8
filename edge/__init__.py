"""The app edge: signs end users in and hands them session tokens for user-facing RPCs."""
