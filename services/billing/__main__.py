"""`python -m services.billing`: run the billing service until SIGTERM."""

from services.billing.app import main

if __name__ == "__main__":
    main()
