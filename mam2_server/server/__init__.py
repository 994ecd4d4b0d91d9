"""The MAM2 matting server (`mam2 serve`): ZeroMQ ROUTER front end, shots, disk cache."""
from mam2_server.server.app import Server, ServerConfig
from mam2_server.server.security import SecurityError

__all__ = ["Server", "ServerConfig", "SecurityError"]
