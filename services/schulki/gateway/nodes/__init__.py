"""The service nodes the gateway calls (gRPC clients, the node list read while it runs) and the chat models they serve."""
