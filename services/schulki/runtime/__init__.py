"""The service runtime every schulki gRPC service is built on."""
