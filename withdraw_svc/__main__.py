from meshkit.server import main
from withdraw_svc.server import build

if __name__ == "__main__":
    main("withdraw_svc", build)
