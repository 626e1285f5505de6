"""`python -m services.classifier`: run the classifier service until SIGTERM."""

from services.classifier.app import main

if __name__ == "__main__":
    main()
