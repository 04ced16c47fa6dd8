from meshkit.server import main
from recon_svc.server import build

main("recon_svc", build)
