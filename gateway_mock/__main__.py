from gateway_mock.server import build
from meshkit.server import main

main("gateway_mock", build)
