"""`python -m services.console`: run the operator console until SIGTERM."""

from services.console.app import main

if __name__ == "__main__":
    main()
