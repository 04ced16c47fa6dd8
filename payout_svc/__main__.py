from meshkit.server import main
from payout_svc.server import build

main("payout_svc", build)
