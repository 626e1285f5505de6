"""`python -m services.intake`: run the intake service until SIGTERM."""

from services.intake.app import main

if __name__ == "__main__":
    main()
