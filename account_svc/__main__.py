from account_svc.server import build
from meshkit.server import main

main("account_svc", build)
