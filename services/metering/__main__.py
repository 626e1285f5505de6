"""`python -m services.metering`: run the metering service until SIGTERM."""

from services.metering.app import main

if __name__ == "__main__":
    main()
